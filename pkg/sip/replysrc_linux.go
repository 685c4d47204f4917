package sip

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A UDP socket bound to the wildcard address sends with whatever source
// address the kernel picks for the route, which need not be the address the
// peer wrote to: a carrier that sends to a keepalived VIP gets our answers
// from the host's own address, and many SBCs drop those. replySources makes
// every UDP socket of a wildcard listener answer a peer from the address
// that peer last wrote to: reads ask the kernel for each datagram's
// destination (IP_PKTINFO), writes to a known peer set it as the source.
// Peers never heard from (a node before its first packet) keep the kernel's
// choice, and so do IPv6 peers: this covers IPv4 peers, on an IPv4 socket
// or v4-mapped on the dual-stack socket Go opens for 0.0.0.0.
type replySources struct {
	mu    sync.RWMutex
	local map[netip.AddrPort]netip.Addr // peer -> the address it wrote to
}

// maxReplySources bounds the peers remembered. Spoofed floods can fill it;
// it then starts afresh, which only costs the peers forgotten the kernel's
// source address until their next datagram.
const maxReplySources = 1 << 16

func newReplySources() *replySources {
	return &replySources{local: make(map[netip.AddrPort]netip.Addr)}
}

// wrap turns on IP_PKTINFO on pc and returns it answering from the
// remembered addresses. pc must be an IPv4 UDP socket.
func (r *replySources) wrap(pc net.PacketConn) (net.PacketConn, error) {
	uc, ok := pc.(*net.UDPConn)
	if !ok {
		return nil, fmt.Errorf("reply source: %T is not a UDP socket", pc)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("reply source: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_PKTINFO, 1)
	}); err != nil {
		return nil, fmt.Errorf("reply source: %w", err)
	}
	if serr != nil {
		return nil, fmt.Errorf("reply source: IP_PKTINFO: %w", serr)
	}
	// The read buffer is allocated as words so that control headers in it
	// are aligned.
	oob := make([]uint64, (pktinfoSpace+7)/8)
	return &replySourceConn{UDPConn: uc, sources: r, oob: unsafe.Slice((*byte)(unsafe.Pointer(&oob[0])), pktinfoSpace)}, nil
}

func (r *replySources) lookup(peer netip.AddrPort) (netip.Addr, bool) {
	r.mu.RLock()
	a, ok := r.local[peer]
	r.mu.RUnlock()
	return a, ok
}

// remember notes that peer wrote to dst. Only unicast destinations are
// kept: a source address must be one of ours to send from.
func (r *replySources) remember(peer netip.AddrPort, dst netip.Addr) {
	if !dst.Is4() || dst.IsUnspecified() || dst.IsMulticast() || dst == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return
	}
	if a, ok := r.lookup(peer); ok && a == dst {
		return // the common case: no write lock
	}
	r.mu.Lock()
	if len(r.local) >= maxReplySources {
		r.local = make(map[netip.AddrPort]netip.Addr)
	}
	r.local[peer] = dst
	r.mu.Unlock()
}

// forget drops peer's address if it is still src.
func (r *replySources) forget(peer netip.AddrPort, src netip.Addr) {
	r.mu.Lock()
	if r.local[peer] == src {
		delete(r.local, peer)
	}
	r.mu.Unlock()
}

// pktinfoSpace is the control buffer for one IP_PKTINFO message.
var pktinfoSpace = unix.CmsgSpace(unix.SizeofInet4Pktinfo)

// replySourceConn is one socket of a wildcard UDP listener; see
// replySources. sipgo reads a socket from one goroutine, so the read-side
// control buffer is not shared; writes come from any goroutine.
type replySourceConn struct {
	*net.UDPConn
	sources *replySources
	oob     []byte
}

// ReadFrom reads a datagram and remembers which of our addresses its sender
// wrote to.
func (c *replySourceConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, oobn, _, peer, err := c.ReadMsgUDPAddrPort(b, c.oob)
	if err != nil {
		return n, nil, err
	}
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	if dst, ok := pktinfoDst(c.oob[:oobn]); ok {
		c.sources.remember(peer, dst)
	}
	return n, net.UDPAddrFromAddrPort(peer), nil
}

// WriteTo sends b to addr from the address addr last wrote to, if known.
func (c *replySourceConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return c.UDPConn.WriteTo(b, addr)
	}
	ap := ua.AddrPort()
	peer := netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	src, ok := c.sources.lookup(peer)
	if !ok {
		return c.UDPConn.WriteTo(b, addr)
	}
	var buf [8]uint64 // 64 bytes > pktinfoSpace, aligned for the header
	oob := unsafe.Slice((*byte)(unsafe.Pointer(&buf[0])), pktinfoSpace)
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
	info.Spec_dst = src.As4()
	n, _, err := c.WriteMsgUDPAddrPort(b, oob, peer)
	if err != nil {
		// The address is no longer ours (the VIP moved to the other
		// instance) or the kernel refuses it: send as before rather than
		// not at all, and ask again when the peer next writes.
		c.sources.forget(peer, src)
		return c.UDPConn.WriteTo(b, addr)
	}
	return n, err
}

// pktinfoDst returns the destination address an IP_PKTINFO control message
// carries (the address the datagram was sent to).
func pktinfoDst(oob []byte) (netip.Addr, bool) {
	for len(oob) >= unix.CmsgLen(0) {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.CmsgLen(0) || l > len(oob) {
			return netip.Addr{}, false
		}
		if h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && l >= unix.CmsgLen(unix.SizeofInet4Pktinfo) {
			info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)]))
			return netip.AddrFrom4(info.Addr), true
		}
		next := unix.CmsgSpace(l - unix.CmsgLen(0))
		if next > len(oob) {
			break
		}
		oob = oob[next:]
	}
	return netip.Addr{}, false
}
