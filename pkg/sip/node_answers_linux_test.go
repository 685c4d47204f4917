package sip

import (
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestNodeAnswerSocketReadBuffer: the sockets nodes' answers arrive on (our
// listening sockets, see TestNodeAnswersReachListeningSocket) get the
// receive buffer asked for, not the kernel default that overflowed in
// sipgo's example (benchmarks/README.md, "Lost transactions under load
// (sipgo)"). Linux reports twice the size set, capped at
// net.core.rmem_max.
func TestNodeAnswerSocketReadBuffer(t *testing.T) {
	rmemMax := procInt(t, "/proc/sys/net/core/rmem_max")
	rmemDefault := procInt(t, "/proc/sys/net/core/rmem_default")
	cases := []struct {
		name       string
		udpSockets int
		readBuffer int // Config.UDPReadBuffer; 0 is the 4 MiB default
	}{
		{name: "default size, one socket", udpSockets: 1},
		{name: "default size, SO_REUSEPORT sockets", udpSockets: 3},
		{name: "1 MiB", udpSockets: 2, readBuffer: 1 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.readBuffer
			if want == 0 {
				want = 4 << 20
			}
			want = 2 * min(want, rmemMax)
			if want <= rmemDefault {
				t.Skipf("net.core.rmem_max %d leaves nothing above the default %d", rmemMax, rmemDefault)
			}
			node := newBurstNode(t, "127.0.6.2:0", 1)
			defer node.conn.Close()
			p, done := answersProxyBuffer(t, node.addr(), tc.udpSockets, tc.readBuffer)
			defer done()
			l := p.byNetwork["udp"]
			require.NotNil(t, l)
			socks := append([]net.PacketConn{l.udp}, l.more...)
			require.Len(t, socks, tc.udpSockets)
			for i, pc := range socks {
				got := rcvBuf(t, pc)
				require.GreaterOrEqualf(t, got, want, "socket %d of %s: SO_RCVBUF %d, want %d (default %d)",
					i, l, got, want, rmemDefault)
			}
		})
	}
}

func rcvBuf(t *testing.T, pc net.PacketConn) int {
	t.Helper()
	uc, ok := pc.(*net.UDPConn)
	require.True(t, ok)
	rc, err := uc.SyscallConn()
	require.NoError(t, err)
	var v int
	var serr error
	require.NoError(t, rc.Control(func(fd uintptr) {
		v, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF)
	}))
	require.NoError(t, serr)
	return v
}

func procInt(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Skipf("%s: %v", path, err)
	}
	v, err := strconv.Atoi(strings.TrimSpace(string(b)))
	require.NoError(t, err)
	return v
}
