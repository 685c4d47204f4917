package sip

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestNodeAnswersReachListeningSocket covers the way sipgo's own proxy
// example loses transactions under load (benchmarks/README.md, "Lost
// transactions under load (sipgo)"): a request sent without a local address
// leaves from an ephemeral socket sipgo opens per destination, the node
// answers to that socket, and a burst of answers overflows its default-sized
// receive buffer, so the client transactions never see them. Our proxy sends
// every request to a node from its listening socket, which is sized
// (UDPReadBuffer) and read by every reader we start.
//
// A node that, like sipp and many UAs, answers to the packet source (and
// answers in-dialog requests to the source of the dialog's first INVITE)
// holds its answers until a whole batch of INVITEs has arrived and then
// sends them back to back, so that many transactions to it end at once. The
// test checks that every request reaching the node (INVITE, the ACK for a
// 2xx, the ACK sipgo generates for a non-2xx, BYE) left from the proxy's
// listening address, and that every call completes.
func TestNodeAnswersReachListeningSocket(t *testing.T) {
	cases := []struct {
		name       string
		udpSockets int
		calls      int
	}{
		{name: "one socket", udpSockets: 1, calls: 100},
		{name: "SO_REUSEPORT sockets", udpSockets: 4, calls: 100},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.udpSockets > 1 && runtime.GOOS != "linux" {
				t.Skip("several sockets per listener need SO_REUSEPORT (Linux)")
			}
			node := newBurstNode(t, "127.0.6.2:0", tc.calls)
			defer node.conn.Close()
			p, done := answersProxy(t, node.addr(), tc.udpSockets)
			defer done()
			proxyAddr := p.Addr("udp")

			uac := newBurstUAC(t, proxyAddr)
			defer uac.conn.Close()
			require.NoError(t, uac.run(tc.calls, 30*time.Second))

			// Every request the node got came from the listening socket.
			byMethod := map[string]int{}
			for _, r := range node.received() {
				require.Equalf(t, proxyAddr, r.source,
					"%s for call %s reached the node from %s, not from the listening socket %s",
					r.method, r.callID, r.source, proxyAddr)
				byMethod[r.method]++
			}
			rejected := tc.calls / burstRejectEvery
			require.GreaterOrEqual(t, byMethod["INVITE"], tc.calls)
			require.GreaterOrEqual(t, byMethod["BYE"], tc.calls-rejected)
			// ACKs for the 2xx (relayed) and for the 486 (sipgo's own).
			require.GreaterOrEqual(t, byMethod["ACK"], tc.calls)
		})
	}
}

// burstRejectEvery: every so many calls the node answers 486 instead of 200,
// so that sipgo's client transaction sends its own ACK.
const burstRejectEvery = 10

func answersProxy(tb testing.TB, nodeAddr string, udpSockets int) (*Proxy, func()) {
	tb.Helper()
	return answersProxyBuffer(tb, nodeAddr, udpSockets, 0)
}

// answersProxyBuffer starts a proxy on one UDP listener in front of one node
// (readBuffer is Config.UDPReadBuffer).
func answersProxyBuffer(tb testing.TB, nodeAddr string, udpSockets, readBuffer int) (*Proxy, func()) {
	tb.Helper()
	return singleNodeProxy(tb, nodeAddr, Config{
		Listen:        []Listen{{Network: "udp", Addr: "127.0.6.1:0"}},
		UDPSockets:    udpSockets,
		UDPReadBuffer: readBuffer,
		InviteTimeout: 10 * time.Second, MaxAttempts: 1,
	})
}

type nodeRequest struct {
	method, callID, source string
}

// burstNode is a UAS that answers to packet sources. It answers INVITEs in
// batches: nothing until batch of them are waiting, then 100, 180 and a
// final response for each, back to back. A final response is retransmitted
// until its ACK arrives, and a retransmitted INVITE already answered gets
// it again.
type burstNode struct {
	rawUAS // respond() builds the answers
	batch  int

	mu      sync.Mutex
	log     []nodeRequest
	peer    map[string]netip.AddrPort // Call-ID -> source of its first INVITE
	final   map[string][]byte         // Call-ID -> final response to the INVITE
	acked   map[string]bool           // Call-ID -> the final was ACKed
	pending [][]byte                  // INVITEs waiting for the batch
}

func newBurstNode(tb testing.TB, addr string, batch int) *burstNode {
	tb.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	require.NoError(tb, err)
	c, err := net.ListenUDP("udp", ua)
	require.NoError(tb, err)
	_ = c.SetReadBuffer(4 << 20)
	n := &burstNode{rawUAS: rawUAS{conn: c}, batch: batch,
		peer: map[string]netip.AddrPort{}, final: map[string][]byte{}, acked: map[string]bool{}}
	go n.serve()
	return n
}

func (n *burstNode) received() []nodeRequest {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]nodeRequest(nil), n.log...)
}

func (n *burstNode) serve() {
	buf := make([]byte, 65535)
	for {
		_ = n.conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		k, from, err := n.conn.ReadFromUDPAddrPort(buf)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			n.retransmitFinals()
			continue
		}
		if err != nil {
			return
		}
		msg := append([]byte(nil), buf[:k]...)
		sp := bytes.IndexByte(msg, ' ')
		if sp <= 0 || bytes.HasPrefix(msg, []byte("SIP/2.0")) {
			continue
		}
		method, callID := string(msg[:sp]), headerValue(msg, "Call-ID:")
		var out [][]byte
		n.mu.Lock()
		n.log = append(n.log, nodeRequest{method: method, callID: callID, source: from.String()})
		if _, ok := n.peer[callID]; !ok {
			n.peer[callID] = from
		}
		peer := n.peer[callID]
		switch method {
		case "INVITE":
			switch {
			case n.final[callID] != nil:
				out = append(out, n.final[callID])
			case n.isPending(callID):
				// retransmission before the batch is complete
			default:
				n.pending = append(n.pending, msg)
				if len(n.pending) >= n.batch {
					for _, inv := range n.pending {
						out = append(out, n.answer(inv)...)
					}
					n.pending = nil
				}
			}
		case "ACK":
			n.acked[callID] = true
		case "BYE", "OPTIONS":
			out = append(out, n.respond(nil, msg, "200 OK", false, false))
		}
		n.mu.Unlock()
		for _, m := range out {
			_, _ = n.conn.WriteToUDPAddrPort(m, peer)
		}
	}
}

// retransmitFinals sends again the final responses not ACKed yet, as a UAS
// does over UDP (RFC 3261 §13.3.1.4 for 2xx, Timer G for the others).
func (n *burstNode) retransmitFinals() {
	type send struct {
		msg []byte
		to  netip.AddrPort
	}
	var out []send
	n.mu.Lock()
	for callID, final := range n.final {
		if !n.acked[callID] {
			out = append(out, send{final, n.peer[callID]})
		}
	}
	n.mu.Unlock()
	for _, m := range out {
		_, _ = n.conn.WriteToUDPAddrPort(m.msg, m.to)
	}
}

func (n *burstNode) isPending(callID string) bool {
	for _, inv := range n.pending {
		if headerValue(inv, "Call-ID:") == callID {
			return true
		}
	}
	return false
}

// answer returns 100, 180 and the final response to inv (n.mu held).
func (n *burstNode) answer(inv []byte) [][]byte {
	callID := headerValue(inv, "Call-ID:")
	final := n.respond(nil, inv, "200 OK", true, true)
	if id, err := strconv.Atoi(callIDNumber(callID)); err == nil && id%burstRejectEvery == 0 {
		final = n.respond(nil, inv, "486 Busy Here", false, false)
	}
	n.final[callID] = final
	return [][]byte{
		n.respond(nil, inv, "100 Trying", false, false),
		n.respond(nil, inv, "180 Ringing", true, false),
		final,
	}
}

// burstUAC places calls concurrently from one socket and retransmits its
// requests like a UA over UDP, so that the test does not depend on how
// large a burst the proxy's socket absorbs.
type burstUAC struct {
	conn  *net.UDPConn
	proxy netip.AddrPort
}

func newBurstUAC(tb testing.TB, proxy string) *burstUAC {
	tb.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 6, 3)})
	require.NoError(tb, err)
	_ = c.SetReadBuffer(4 << 20)
	return &burstUAC{conn: c, proxy: netip.MustParseAddrPort(proxy)}
}

type uacCall struct {
	req      []byte // INVITE, then BYE
	method   string
	sent     time.Time
	finished bool
}

// run places calls: all INVITEs, an ACK for each final response, then a BYE
// for each answered call. It returns once every transaction got its final
// response, or an error at the deadline.
func (u *burstUAC) run(calls int, timeout time.Duration) error {
	local := u.conn.LocalAddr().String()
	ruri := "sip:1000@" + u.proxy.String()
	state := make(map[string]*uacCall, calls)
	for i := 1; i <= calls; i++ {
		id := strconv.Itoa(i)
		c := &uacCall{method: "INVITE",
			req: (&rawUAC{}).request(nil, "INVITE", ruri, id, "1", "", nil, local, true)}
		state["c"+id+"@bench"] = c
		if err := u.send(c); err != nil {
			return err
		}
	}
	open := calls
	deadline := time.Now().Add(timeout)
	buf := make([]byte, 65535)
	for open > 0 {
		if time.Now().After(deadline) {
			var stuck []string
			for id, c := range state {
				if !c.finished {
					stuck = append(stuck, id+" "+c.method)
				}
			}
			return fmt.Errorf("%d of %d transactions still without a final response: %v", open, calls, stuck)
		}
		_ = u.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		k, _, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				// Retransmit what is still unanswered (Timer A-like).
				for _, c := range state {
					if !c.finished && time.Since(c.sent) > 500*time.Millisecond {
						if err := u.send(c); err != nil {
							return err
						}
					}
				}
				continue
			}
			return err
		}
		res := buf[:k]
		if !bytes.HasPrefix(res, []byte("SIP/2.0 ")) || len(res) < 12 || res[8] == '1' {
			continue
		}
		callID := headerValue(res, "Call-ID:")
		c := state[callID]
		if c == nil {
			return fmt.Errorf("answer for unknown call %q", callID)
		}
		cseq := headerValue(res, "CSeq:")
		id := callIDNumber(callID)
		if bytes.HasSuffix([]byte(cseq), []byte("INVITE")) {
			// ACK every final response to the INVITE, retransmissions too.
			d := parseDialog(res)
			var ack []byte
			if res[8] == '2' {
				ack = (&rawUAC{}).request(nil, "ACK", d.contact, id, "1", d.toTag, d.routes, local, false)
			} else {
				ack = inviteACK(c.req, d.toTag)
			}
			if _, err := u.conn.WriteToUDPAddrPort(ack, u.proxy); err != nil {
				return err
			}
			if c.method != "INVITE" || c.finished {
				continue
			}
			if res[8] != '2' {
				c.finished = true
				open--
				continue
			}
			c.method = "BYE"
			c.req = (&rawUAC{}).request(nil, "BYE", d.contact, id, "2", d.toTag, d.routes, local, false)
			if err := u.send(c); err != nil {
				return err
			}
			continue
		}
		if c.method == "BYE" && !c.finished && bytes.HasSuffix([]byte(cseq), []byte("BYE")) {
			if res[8] != '2' {
				return fmt.Errorf("BYE of %s answered %q", callID, res[:bytes.Index(res, crlf)])
			}
			c.finished = true
			open--
		}
	}
	return nil
}

func (u *burstUAC) send(c *uacCall) error {
	c.sent = time.Now()
	_, err := u.conn.WriteToUDPAddrPort(c.req, u.proxy)
	return err
}

// inviteACK is the ACK for a non-2xx final response to invite: same
// Request-URI, Via, From, Call-ID and CSeq number, the response's To tag.
func inviteACK(invite []byte, toTag string) []byte {
	var out []byte
	lines := bytes.Split(invite[:bytes.Index(invite, []byte("\r\n\r\n"))], crlf)
	out = append(out, "ACK"...)
	out = append(out, lines[0][bytes.IndexByte(lines[0], ' '):]...)
	out = append(out, crlf...)
	for _, l := range lines[1:] {
		switch {
		case hasPrefixFold(l, "Via:"), hasPrefixFold(l, "From:"), hasPrefixFold(l, "Call-ID:"), hasPrefixFold(l, "Max-Forwards:"):
			out = append(append(out, l...), crlf...)
		case hasPrefixFold(l, "To:"):
			out = append(append(out, l...), ";tag="...)
			out = append(append(out, toTag...), crlf...)
		case hasPrefixFold(l, "CSeq:"):
			out = append(out, "CSeq: 1 ACK\r\n"...)
		}
	}
	return append(out, "Content-Length: 0\r\n\r\n"...)
}

// headerValue returns the trimmed value of the first header named name
// ("Call-ID:"), or "".
func headerValue(msg []byte, name string) string {
	rest := msg
	for len(rest) > 0 {
		i := bytes.Index(rest, crlf)
		if i <= 0 {
			return ""
		}
		if hasPrefixFold(rest[:i], name) {
			return string(bytes.TrimSpace(rest[len(name):i]))
		}
		rest = rest[i+2:]
	}
	return ""
}

// callIDNumber returns the call number in a Call-ID c<n>@bench.
func callIDNumber(callID string) string {
	if at := bytes.IndexByte([]byte(callID), '@'); at > 1 {
		return callID[1:at]
	}
	return ""
}
