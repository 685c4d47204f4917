package sip

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/session"
)

// BenchmarkProxyCall forwards whole calls through a real proxy on loopback
// UDP sockets: INVITE, 180, 200, ACK, re-INVITE, 200, ACK, BYE, 200 — eight
// messages in and eight out of the proxy per call. The caller and the node
// are raw UDP endpoints that build and answer messages with a few byte
// operations, so that what the benchmark measures (time and allocations per
// call) is the proxy's.
//
//	go test -run '^$' -bench ProxyCall -benchmem ./pkg/sip/
func BenchmarkProxyCall(b *testing.B) {
	for _, listen := range []string{"127.0.0.1:0", "0.0.0.0:0"} {
		b.Run("listen="+listen, func(b *testing.B) { benchProxyCall(b, listen) })
	}
}

// benchProxyCall is BenchmarkProxyCall on one listen address; on the
// wildcard address the listener also answers each peer from the address
// it wrote to (replySources).
func benchProxyCall(b *testing.B, listen string) {
	p, uac, done := benchProxy(b, listen)
	defer done()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := uac.call(i); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	_ = p
}

// benchProxy starts a proxy listening on listen (UDP) with one node (a raw
// UAS) and returns a raw UAC that sends to it over 127.0.0.1.
func benchProxy(tb testing.TB, listen string) (*Proxy, *rawUAC, func()) {
	tb.Helper()
	uas := newRawUAS(tb, "127.0.6.1:0")
	p, stop := singleNodeProxy(tb, uas.addr(), Config{
		Listen:        []Listen{{Network: "udp", Addr: listen}},
		InviteTimeout: 2 * time.Second, MaxAttempts: 2,
	})
	port := netip.MustParseAddrPort(p.Addr("udp")).Port()
	uac := newRawUAC(tb, netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String())
	return p, uac, func() {
		stop()
		uac.conn.Close()
		uas.conn.Close()
	}
}

// singleNodeProxy starts a proxy with cfg (its listeners, timeouts and
// sockets; dialog timers are filled in) in front of one UDP node at
// nodeAddr, with a memory store. stop closes both.
func singleNodeProxy(tb testing.TB, nodeAddr string, cfg Config) (p *Proxy, stop func()) {
	tb.Helper()
	pol, err := dispatcher.NewPolicy("weighted_round_robin")
	require.NoError(tb, err)
	ap := netip.MustParseAddrPort(nodeAddr)
	d, err := dispatcher.New(pol, []dispatcher.Spec{
		{ID: "n1", Host: ap.Addr().String(), Addr: ap, Transport: "UDP", Weight: 1},
	})
	require.NoError(tb, err)
	signer, _ := session.NewSigner([]byte("test"))
	store := session.NewMemory(session.MemoryOptions{})
	cfg.EarlyTTL, cfg.DialogTTL, cfg.ReleaseLinger = time.Minute, time.Hour, time.Second
	p, err = New(cfg, Deps{Dispatcher: d, Store: store, Signer: signer, Secret: []byte("test")})
	require.NoError(tb, err)
	require.NoError(tb, p.Start())
	return p, func() {
		p.Close()
		store.Close()
	}
}

// rawUAS answers like a minimal UA: 180 and 200 (with SDP, To tag, Contact
// and the Record-Route copied) to an INVITE, 200 to a re-INVITE and a BYE.
type rawUAS struct {
	conn *net.UDPConn
}

func newRawUAS(tb testing.TB, addr string) *rawUAS {
	tb.Helper()
	ua, err := net.ResolveUDPAddr("udp", addr)
	require.NoError(tb, err)
	c, err := net.ListenUDP("udp", ua)
	require.NoError(tb, err)
	u := &rawUAS{conn: c}
	go u.serve()
	return u
}

func (u *rawUAS) addr() string { return u.conn.LocalAddr().String() }

var (
	crlf    = []byte("\r\n")
	sdpBody = []byte("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
)

func (u *rawUAS) serve() {
	buf := make([]byte, 65535)
	out := make([]byte, 0, 4096)
	for {
		n, from, err := u.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		msg := buf[:n]
		switch {
		case bytes.HasPrefix(msg, []byte("INVITE ")):
			hasTag := headerHasTag(msg, "To:")
			if !hasTag {
				out = u.respond(out[:0], msg, "180 Ringing", true, false)
				_, _ = u.conn.WriteToUDPAddrPort(out, from)
			}
			out = u.respond(out[:0], msg, "200 OK", !hasTag, true)
			_, _ = u.conn.WriteToUDPAddrPort(out, from)
		case bytes.HasPrefix(msg, []byte("BYE ")), bytes.HasPrefix(msg, []byte("OPTIONS ")):
			out = u.respond(out[:0], msg, "200 OK", false, false)
			_, _ = u.conn.WriteToUDPAddrPort(out, from)
		}
	}
}

// respond builds a response to req: Vias, From, To (tagged), Call-ID, CSeq
// copied; Record-Route copied when rr; a Contact and an SDP body when sdp.
func (u *rawUAS) respond(out, req []byte, status string, rr, sdp bool) []byte {
	out = append(out, "SIP/2.0 "...)
	out = append(out, status...)
	out = append(out, crlf...)
	rest := req[bytes.Index(req, crlf)+2:]
	for len(rest) > 0 {
		i := bytes.Index(rest, crlf)
		if i <= 0 {
			break
		}
		line := rest[:i]
		rest = rest[i+2:]
		switch {
		case hasPrefixFold(line, "Via:"), hasPrefixFold(line, "From:"), hasPrefixFold(line, "Call-ID:"), hasPrefixFold(line, "CSeq:"):
			out = append(append(out, line...), crlf...)
		case hasPrefixFold(line, "To:"):
			out = append(out, line...)
			if !bytes.Contains(line, []byte(";tag=")) {
				out = append(out, ";tag=uas1"...)
			}
			out = append(out, crlf...)
		case rr && hasPrefixFold(line, "Record-Route:"):
			out = append(append(out, line...), crlf...)
		}
	}
	if sdp || status[0] == '1' {
		out = append(out, "Contact: <sip:uas@"...)
		out = append(out, u.addr()...)
		out = append(out, ">\r\n"...)
	}
	return appendBody(out, sdp)
}

// appendBody ends a message: the SDP body with its headers, or none.
func appendBody(out []byte, sdp bool) []byte {
	if sdp {
		out = append(out, "Content-Type: application/sdp\r\nContent-Length: "...)
		out = strconv.AppendInt(out, int64(len(sdpBody)), 10)
		out = append(out, "\r\n\r\n"...)
		return append(out, sdpBody...)
	}
	return append(out, "Content-Length: 0\r\n\r\n"...)
}

func hasPrefixFold(line []byte, p string) bool {
	return len(line) >= len(p) && bytes.EqualFold(line[:len(p)], []byte(p))
}

func headerHasTag(msg []byte, name string) bool {
	rest := msg
	for len(rest) > 0 {
		i := bytes.Index(rest, crlf)
		if i <= 0 {
			return false
		}
		if hasPrefixFold(rest[:i], name) {
			return bytes.Contains(rest[:i], []byte(";tag="))
		}
		rest = rest[i+2:]
	}
	return false
}

// rawUAC places calls and follows the dialog's route set.
type rawUAC struct {
	conn  *net.UDPConn
	proxy netip.AddrPort
	buf   []byte
	out   []byte
}

func newRawUAC(tb testing.TB, proxy string) *rawUAC {
	tb.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	require.NoError(tb, err)
	return &rawUAC{conn: c, proxy: netip.MustParseAddrPort(proxy), buf: make([]byte, 65535), out: make([]byte, 0, 4096)}
}

type dialogInfo struct {
	toTag, contact string
	routes         []string
}

func (u *rawUAC) call(i int) error {
	id := strconv.Itoa(i)
	local := u.conn.LocalAddr().String()
	u.out = u.request(u.out[:0], "INVITE", "sip:1000@"+u.proxy.String(), id, "1", "", nil, local, true)
	res, err := u.exchange(u.out, "INVITE")
	if err != nil {
		return err
	}
	d := parseDialog(res)
	u.out = u.request(u.out[:0], "ACK", d.contact, id, "1", d.toTag, d.routes, local, false)
	if _, err := u.conn.WriteToUDPAddrPort(u.out, u.proxy); err != nil {
		return err
	}
	u.out = u.request(u.out[:0], "INVITE", d.contact, id, "2", d.toTag, d.routes, local, true)
	if _, err := u.exchange(u.out, "INVITE"); err != nil {
		return err
	}
	u.out = u.request(u.out[:0], "ACK", d.contact, id, "2", d.toTag, d.routes, local, false)
	if _, err := u.conn.WriteToUDPAddrPort(u.out, u.proxy); err != nil {
		return err
	}
	u.out = u.request(u.out[:0], "BYE", d.contact, id, "3", d.toTag, d.routes, local, false)
	_, err = u.exchange(u.out, "BYE")
	return err
}

// exchange sends req and returns the first final response.
func (u *rawUAC) exchange(req []byte, method string) ([]byte, error) {
	if _, err := u.conn.WriteToUDPAddrPort(req, u.proxy); err != nil {
		return nil, err
	}
	_ = u.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		n, _, err := u.conn.ReadFromUDPAddrPort(u.buf)
		if err != nil {
			return nil, err
		}
		msg := u.buf[:n]
		if len(msg) > 12 && msg[8] == '1' {
			continue
		}
		if !bytes.HasPrefix(msg, []byte("SIP/2.0 2")) {
			return nil, &net.AddrError{Err: "unexpected answer: " + string(msg[:bytes.Index(msg, crlf)]), Addr: method}
		}
		return msg, nil
	}
}

func (u *rawUAC) request(out []byte, method, ruri, id, cseq, toTag string, routes []string, local string, sdp bool) []byte {
	out = append(out, method...)
	out = append(out, ' ')
	out = append(out, ruri...)
	out = append(out, " SIP/2.0\r\nVia: SIP/2.0/UDP "...)
	out = append(out, local...)
	out = append(out, ";branch=z9hG4bK-"...)
	out = append(out, id...)
	out = append(out, '-')
	out = append(out, method...)
	out = append(out, cseq...)
	out = append(out, ";rport\r\nMax-Forwards: 70\r\n"...)
	for _, r := range routes {
		out = append(out, "Route: "...)
		out = append(out, r...)
		out = append(out, crlf...)
	}
	out = append(out, "From: <sip:uac@127.0.0.1>;tag=f"...)
	out = append(out, id...)
	out = append(out, "\r\nTo: <sip:1000@127.0.0.1>"...)
	if toTag != "" {
		out = append(out, ";tag="...)
		out = append(out, toTag...)
	}
	out = append(out, "\r\nCall-ID: c"...)
	out = append(out, id...)
	out = append(out, "@bench\r\nCSeq: "...)
	out = append(out, cseq...)
	out = append(out, ' ')
	out = append(out, method...)
	out = append(out, "\r\nContact: <sip:uac@"...)
	out = append(out, local...)
	out = append(out, ">\r\n"...)
	return appendBody(out, sdp)
}

// parseDialog takes the To tag, Contact and Record-Route (reversed into a
// route set) from a 2xx.
func parseDialog(res []byte) dialogInfo {
	var d dialogInfo
	var rr []string
	rest := res
	for len(rest) > 0 {
		i := bytes.Index(rest, crlf)
		if i <= 0 {
			break
		}
		line := string(rest[:i])
		rest = rest[i+2:]
		switch {
		case hasPrefixFold([]byte(line), "To:"):
			if j := bytes.Index([]byte(line), []byte(";tag=")); j >= 0 {
				d.toTag = line[j+5:]
			}
		case hasPrefixFold([]byte(line), "Contact:"):
			v := line[len("Contact:"):]
			if a, b := bytes.IndexByte([]byte(v), '<'), bytes.IndexByte([]byte(v), '>'); a >= 0 && b > a {
				d.contact = v[a+1 : b]
			}
		case hasPrefixFold([]byte(line), "Record-Route:"):
			rr = append(rr, line[len("Record-Route:")+1:])
		}
	}
	for i := len(rr) - 1; i >= 0; i-- {
		d.routes = append(d.routes, rr[i])
	}
	return d
}

// TestProxyCallRaw places whole calls through the proxy, on a specific
// address and on the wildcard one (whose sockets answer through
// replySources).
func TestProxyCallRaw(t *testing.T) {
	for _, listen := range []string{"127.0.0.1:0", "0.0.0.0:0"} {
		t.Run("listen="+listen, func(t *testing.T) {
			_, uac, done := benchProxy(t, listen)
			defer done()
			for i := 0; i < 20; i++ {
				require.NoError(t, uac.call(i))
			}
		})
	}
}

// BenchmarkRewrite is the request rewrite of a new call's INVITE, as the
// proxy does it per forward: our Via branch, the received Via, the signed
// Record-Route token, and the outbound copy (the inbound message is never
// modified).
//
//	go test -run '^$' -bench Rewrite -benchmem ./pkg/sip/
func BenchmarkRewrite(b *testing.B) {
	p := testProxy(b)
	in := parseReq(b, inviteRaw)
	in.SetSource("192.0.2.99:5099")
	n := p.disp.Node("fs1")
	l := p.listenerFor("UDP")
	callID, fromTag := string(*in.CallID()), tagOf(in.From().Params)
	b.ReportAllocs()
	for b.Loop() {
		token := p.signer.Sign(session.Token{NodeID: n.ID()}, callID, fromTag)
		out := buildRequest(in, &outSpec{
			via:       newVia(l, "UDP", p.br.branch(in, "INVITE", 0)),
			prevVia:   receivedVia(in),
			maxFwd:    69,
			rr:        p.recordRoute("UDP", "UDP", token),
			transport: "UDP",
			dest:      n.Spec.Addr.String(),
		})
		if out.Via() == nil {
			b.Fatal("no Via")
		}
	}
}
