//go:build !linux

package sip

import "net"

// replySources is Linux-only (IP_PKTINFO); elsewhere a wildcard UDP
// listener answers from the kernel's choice of source address.
type replySources struct{}

func newReplySources() *replySources { return &replySources{} }

func (*replySources) wrap(pc net.PacketConn) (net.PacketConn, error) { return pc, nil }
