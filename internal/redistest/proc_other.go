//go:build !linux

package redistest

import "syscall"

// sysProcAttr: outside Linux there is no parent-death signal; cleanups kill
// the servers.
func sysProcAttr() *syscall.SysProcAttr { return nil }
