package health

import (
	"bufio"
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
)

// udpResponder answers every OPTIONS on a loopback UDP socket with code,
// after dropping the first `drop` requests (lost datagrams).
func udpResponder(t *testing.T, code int, drop int32) (netip.AddrPort, *atomic.Int32) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() })
	var seen atomic.Int32
	go func() {
		buf := make([]byte, 65535)
		parser := sip.NewParser()
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if seen.Add(1) <= drop {
				continue
			}
			msg, err := parser.ParseSIP(buf[:n])
			if err != nil {
				continue
			}
			req := msg.(*sip.Request)
			if code == 0 {
				continue // silent
			}
			res := sip.NewResponseFromRequest(req, code, "Whatever", nil)
			_, _ = pc.WriteTo([]byte(res.String()), from)
		}
	}()
	return netip.MustParseAddrPort(pc.LocalAddr().String()), &seen
}

func closedUDPPort(t *testing.T) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	ap := netip.MustParseAddrPort(pc.LocalAddr().String())
	require.NoError(t, pc.Close())
	return ap
}

func TestProbeUDP(t *testing.T) {
	alive := AliveCodes([]string{"2xx", "404"})
	tests := []struct {
		name        string
		code        int
		drop        int32
		closed      bool
		wantClass   ProbeClass
		wantStatus  int
		wantRefused bool
	}{
		{name: "200 alive", code: 200, wantClass: ProbeAlive, wantStatus: 200},
		{name: "404 counts as alive", code: 404, wantClass: ProbeAlive, wantStatus: 404},
		{name: "503 is full", code: 503, wantClass: ProbeFull, wantStatus: 503},
		{name: "500 is dead", code: 500, wantClass: ProbeDead, wantStatus: 500},
		{name: "lost datagram is retransmitted", code: 200, drop: 1, wantClass: ProbeAlive, wantStatus: 200},
		{name: "silence is dead, not refused", code: 0, wantClass: ProbeDead},
		{name: "closed port is refused", closed: true, wantClass: ProbeDead, wantRefused: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var target netip.AddrPort
			if tc.closed {
				target = closedUDPPort(t)
			} else {
				target, _ = udpResponder(t, tc.code, tc.drop)
			}
			p := &Prober{Target: target, Transport: "UDP", Timeout: 2 * time.Second, Alive: alive}
			if tc.code == 0 && !tc.closed {
				p.Timeout = 300 * time.Millisecond
			}
			r := p.Probe(context.Background())
			require.Equal(t, tc.wantClass, r.Class, "%+v", r)
			require.Equal(t, tc.wantStatus, r.Status)
			require.Equal(t, tc.wantRefused, r.Refused, "%+v", r)
			if tc.wantStatus != 0 {
				require.Positive(t, r.RTT)
			}
		})
	}
}

func TestProbeTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				raw, err := readStreamMessage(bufio.NewReader(c))
				if err != nil {
					return
				}
				msg, err := sip.NewParser().ParseSIP(raw)
				if err != nil {
					return
				}
				res := sip.NewResponseFromRequest(msg.(*sip.Request), 200, "OK", nil)
				_, _ = c.Write([]byte(res.String()))
			}(c)
		}
	}()
	p := &Prober{Target: netip.MustParseAddrPort(ln.Addr().String()), Transport: "TCP", Timeout: 2 * time.Second, Alive: AliveCodes([]string{"2xx"})}
	r := p.Probe(context.Background())
	require.Equal(t, ProbeAlive, r.Class, "%+v", r)

	// Nothing listening: refused at once.
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l2.Addr().String()
	l2.Close()
	p.Target = netip.MustParseAddrPort(addr)
	r = p.Probe(context.Background())
	require.Equal(t, ProbeDead, r.Class)
	require.True(t, r.Refused, "%+v", r)
}

func TestProbeFromSourceAddr(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	from := make(chan string, 1)
	go func() {
		buf := make([]byte, 65535)
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		from <- addr.(*net.UDPAddr).IP.String()
		msg, _ := sip.NewParser().ParseSIP(buf[:n])
		res := sip.NewResponseFromRequest(msg.(*sip.Request), 200, "OK", nil)
		_, _ = pc.WriteTo([]byte(res.String()), addr)
	}()
	p := &Prober{
		Target: netip.MustParseAddrPort(pc.LocalAddr().String()), Transport: "UDP",
		Source: netip.MustParseAddr("127.0.0.77"), Timeout: 2 * time.Second, Alive: AliveCodes([]string{"2xx"}),
	}
	r := p.Probe(context.Background())
	require.Equal(t, ProbeAlive, r.Class, "%+v", r)
	require.Equal(t, "127.0.0.77", <-from)
}
