package sip

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// reusePort lets several sockets bind the same UDP address; the kernel
// spreads incoming flows (by source address and port) over them.
func reusePort(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
