//go:build !linux

package sip

import "syscall"

// reusePort is a no-op where SO_REUSEPORT is not used: one socket then.
func reusePort(network, address string, c syscall.RawConn) error { return nil }
