package redistest

import "syscall"

// sysProcAttr makes the kernel kill a server whose test binary died without
// running its cleanups (a panic, a timeout, kill -9), so no redis-server
// outlives the test run.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
