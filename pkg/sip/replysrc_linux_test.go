package sip

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestWildcardListenerAnswersFromDestination: a wildcard UDP listener answers
// each peer from the address the peer wrote to, whichever of its
// SO_REUSEPORT sockets read the datagram and whichever writes the answer.
// On loopback the kernel's own choice would be 127.0.0.1 for every answer.
func TestWildcardListenerAnswersFromDestination(t *testing.T) {
	for _, sockets := range []int{1, 3} {
		t.Run(fmt.Sprintf("sockets=%d", sockets), func(t *testing.T) {
			l, err := bind(Listen{Network: "udp", Addr: "0.0.0.0:0"}, nil, sockets, 0, nil)
			require.NoError(t, err)
			defer l.close()
			port := l.bound.Port()

			// Every socket reads; every answer leaves by the first.
			conns := append([]net.PacketConn{l.udp}, l.more...)
			for _, c := range conns {
				go func() {
					buf := make([]byte, 1500)
					for {
						n, from, err := c.ReadFrom(buf)
						if err != nil {
							return
						}
						if _, err := l.udp.WriteTo(append([]byte("re:"), buf[:n]...), from); err != nil {
							t.Errorf("answer to %v: %v", from, err)
							return
						}
					}
				}()
			}

			peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			require.NoError(t, err)
			defer peer.Close()
			for _, dst := range []string{"127.0.8.2", "127.0.8.3", "127.0.8.2"} {
				to := netip.AddrPortFrom(netip.MustParseAddr(dst), port)
				msg := "to " + dst
				got, from := exchange(t, peer, msg, to)
				require.Equal(t, "re:"+msg, got)
				require.Equal(t, to, from, "the answer to a datagram sent to %s came from %s", to, from)
			}
		})
	}
}

// TestWildcardProxyAnswersFromDestination: the proxy's own answer (200 to
// OPTIONS, sent by sipgo through the listener) leaves from the address the
// request was sent to.
func TestWildcardProxyAnswersFromDestination(t *testing.T) {
	uas := newRawUAS(t, "127.0.8.10:0")
	defer uas.conn.Close()
	p, stop := singleNodeProxy(t, uas.addr(), Config{
		Listen:        []Listen{{Network: "udp", Addr: "0.0.0.0:0"}},
		UDPSockets:    2,
		InviteTimeout: 10 * time.Second, MaxAttempts: 1,
	})
	defer stop()
	port := netip.MustParseAddrPort(p.Addr("udp")).Port()

	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer peer.Close()
	for i, dst := range []string{"127.0.8.5", "127.0.8.6"} {
		to := netip.AddrPortFrom(netip.MustParseAddr(dst), port)
		local := peer.LocalAddr().String()
		req := strings.Join([]string{
			fmt.Sprintf("OPTIONS sip:%s SIP/2.0", to),
			fmt.Sprintf("Via: SIP/2.0/UDP %s;branch=z9hG4bK-src-%d", local, i),
			"Max-Forwards: 70",
			fmt.Sprintf("From: <sip:probe@%s>;tag=src%d", local, i),
			fmt.Sprintf("To: <sip:%s>", to),
			fmt.Sprintf("Call-ID: reply-source-%d@test", i),
			"CSeq: 1 OPTIONS",
			"Content-Length: 0",
			"", "",
		}, "\r\n")
		got, from := exchange(t, peer, req, to)
		require.True(t, strings.HasPrefix(got, "SIP/2.0 200"), "answer: %q", got)
		require.Equal(t, to, from, "the answer to an OPTIONS sent to %s came from %s", to, from)
	}
}

// exchange sends msg from peer to to and returns the first datagram back
// and where it came from.
func exchange(t *testing.T, peer *net.UDPConn, msg string, to netip.AddrPort) (string, netip.AddrPort) {
	t.Helper()
	_, err := peer.WriteToUDPAddrPort([]byte(msg), to)
	require.NoError(t, err)
	require.NoError(t, peer.SetReadDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, 4096)
	n, from, err := peer.ReadFromUDPAddrPort(buf)
	require.NoError(t, err)
	return string(buf[:n]), from
}

func TestPktinfoDst(t *testing.T) {
	pktinfo := func(level, typ int32, dst [4]byte) []byte {
		b := make([]byte, pktinfoSpace)
		h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
		h.Level, h.Type = level, typ
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		(*unix.Inet4Pktinfo)(unsafe.Pointer(&b[unix.CmsgLen(0)])).Addr = dst
		return b
	}
	good := pktinfo(unix.IPPROTO_IP, unix.IP_PKTINFO, [4]byte{10, 1, 2, 3})
	other := pktinfo(unix.IPPROTO_IP, unix.IP_TTL, [4]byte{9, 9, 9, 9})
	longLen := append([]byte(nil), good...)
	(*unix.Cmsghdr)(unsafe.Pointer(&longLen[0])).SetLen(len(good) + 1)
	cases := []struct {
		name string
		oob  []byte
		want string // "" for none
	}{
		{"empty", nil, ""},
		{"pktinfo", good, "10.1.2.3"},
		{"another message first", append(append([]byte(nil), other...), good...), "10.1.2.3"},
		{"only another message", other, ""},
		{"truncated header", good[:4], ""},
		{"truncated data", good[:unix.CmsgLen(0)+2], ""},
		{"length past the buffer", longLen, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := pktinfoDst(tc.oob)
			if tc.want == "" {
				require.False(t, ok, "got %v", got)
				return
			}
			require.True(t, ok)
			require.Equal(t, tc.want, got.String())
		})
	}
}

func TestReplySourcesBounded(t *testing.T) {
	r := newReplySources()
	dst := netip.MustParseAddr("10.0.0.1")
	for i := range maxReplySources + 1 {
		r.remember(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), uint16(i>>16)+1), dst)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	require.LessOrEqual(t, len(r.local), maxReplySources)
	require.NotEmpty(t, r.local)
}

// TestReplySourceNoLongerOurs: when the remembered address is no longer
// ours (the VIP moved to the other instance), the answer still leaves, from
// the kernel's choice, and the address is forgotten. Broadcast and
// multicast destinations are never used as sources.
func TestReplySourceNoLongerOurs(t *testing.T) {
	l, err := bind(Listen{Network: "udp", Addr: "0.0.0.0:0"}, nil, 1, 0, nil)
	require.NoError(t, err)
	defer l.close()
	require.NoError(t, l.replySourceErr)
	rc := l.udp.(*replySourceConn)

	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(t, err)
	defer peer.Close()
	peerAP := netip.MustParseAddrPort(peer.LocalAddr().String())

	for _, dst := range []string{"255.255.255.255", "224.0.0.9"} {
		rc.sources.remember(peerAP, netip.MustParseAddr(dst))
		_, ok := rc.sources.lookup(peerAP)
		require.False(t, ok, "%s kept as a source", dst)
	}

	gone := netip.MustParseAddr("192.0.2.77") // TEST-NET-1: not on this host
	rc.sources.remember(peerAP, gone)
	_, err = l.udp.WriteTo([]byte("still here"), net.UDPAddrFromAddrPort(peerAP))
	require.NoError(t, err)
	require.NoError(t, peer.SetReadDeadline(time.Now().Add(10*time.Second)))
	buf := make([]byte, 100)
	n, from, err := peer.ReadFromUDPAddrPort(buf)
	require.NoError(t, err)
	require.Equal(t, "still here", string(buf[:n]))
	require.NotEqual(t, gone, from.Addr())
	_, ok := rc.sources.lookup(peerAP)
	require.False(t, ok, "an address that is not ours was kept")
}
