package fsemu

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
)

// waitFor bounds every wait in these tests; it is generous on purpose, as
// nothing is synchronised by sleeping.
const waitFor = 10 * time.Second

// testLogger logs to stderr with -v (not to t's output: sipgo goroutines
// may still log while a node closes after its test has returned).
func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startNode starts a node for the test and closes it at the end.
func startNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger()
	}
	n, err := Start(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, n.Close()) })
	return n
}

// phone is a caller built on its own sipgo UA, listening on loopback over
// one transport. It builds every request by hand so tests control each
// header.
type phone struct {
	t         *testing.T
	node      *Node
	transport string // "UDP" or "TCP"
	ua        *sipgo.UserAgent
	cl        *sipgo.Client
	host      string
	port      int
	laddr     sip.Addr
	cseq      atomic.Uint32

	// requests receives the requests the node sends the phone (BYE).
	requests chan *sip.Request
	// stray receives responses no client transaction took.
	stray chan *sip.Response
}

func newPhone(t *testing.T, n *Node, transport string) *phone {
	t.Helper()
	p := &phone{
		t:         t,
		node:      n,
		transport: transport,
		requests:  make(chan *sip.Request, 16),
		stray:     make(chan *sip.Response, 64),
	}
	p.cseq.Store(100)
	log := slog.New(slog.DiscardHandler)
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgent("fsemu-test"),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(log)),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(log),
			sip.WithTransactionLayerUnhandledResponseHandler(func(r *sip.Response) {
				select {
				case p.stray <- r:
				default:
				}
			}),
		),
	)
	require.NoError(t, err)
	p.ua = ua
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(log))
	require.NoError(t, err)
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		p.requests <- req
		_ = tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})

	done := make(chan struct{})
	var listener interface{ Close() error }
	switch transport {
	case "UDP":
		conn, err := net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		a := conn.LocalAddr().(*net.UDPAddr)
		p.host, p.port = a.IP.String(), a.Port
		p.laddr = sip.Addr{IP: a.IP, Port: a.Port}
		listener = conn
		served := newReadyPacketConn(conn)
		go func() { defer close(done); _ = srv.ServeUDP(served) }()
		<-served.ready
	case "TCP":
		l, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		a := l.Addr().(*net.TCPAddr)
		p.host, p.port = a.IP.String(), a.Port
		listener = l
		go func() { defer close(done); _ = srv.ServeTCP(l) }()
	default:
		t.Fatalf("unknown transport %q", transport)
	}
	p.cl, err = sipgo.NewClient(ua, sipgo.WithClientHostname(p.host), sipgo.WithClientPort(p.port), sipgo.WithClientLogger(log))
	require.NoError(t, err)
	t.Cleanup(func() {
		ua.Close()
		listener.Close()
		<-done
	})
	return p
}

// withVia adds a fresh Via and, over UDP, sends from the listening socket.
func (p *phone) withVia(c *sipgo.Client, r *sip.Request) error {
	if err := sipgo.ClientRequestAddVia(c, r); err != nil {
		return err
	}
	return p.keepVia(c, r)
}

// via is a Via header for a request sent by the phone.
func (p *phone) via() *sip.ViaHeader {
	return &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: p.transport, Host: p.host, Port: p.port,
		Params: sip.HeaderParams{{K: "branch", V: sip.GenerateBranch()}}}
}

// keepVia sends r as built (a CANCEL reuses the INVITE's Via).
func (p *phone) keepVia(_ *sipgo.Client, r *sip.Request) error {
	if p.transport == "UDP" {
		r.Laddr = p.laddr
	}
	return nil
}

func (p *phone) uriParams() sip.HeaderParams {
	if p.transport == "TCP" {
		return sip.HeaderParams{{K: "transport", V: "tcp"}}
	}
	return nil
}

// invite builds an initial INVITE to the node with an SDP offer.
func (p *phone) invite(extra ...sip.Header) *sip.Request {
	host, port := splitHostPort(p.t, p.node.Addr())
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "1000", Host: host, Port: port, UriParams: p.uriParams()})
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	req.AppendHeader(&sip.FromHeader{
		DisplayName: "Caller",
		Address:     sip.Uri{Scheme: "sip", User: "caller", Host: p.host},
		Params:      sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(10)}},
	})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "1000", Host: host}})
	callID := sip.CallIDHeader(fmt.Sprintf("%s@fsemu-test", sip.GenerateTagN(16)))
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: p.cseq.Add(1), MethodName: sip.INVITE})
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "caller", Host: p.host, Port: p.port, UriParams: p.uriParams()}})
	for _, h := range extra {
		req.AppendHeader(h)
	}
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(offerSDP))
	req.SetTransport(p.transport)
	req.SetDestination(p.node.Addr())
	return req
}

const offerSDP = "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"

// send starts a client transaction for req.
func (p *phone) send(req *sip.Request, opt sipgo.ClientRequestOption) sip.ClientTransaction {
	p.t.Helper()
	tx, err := p.cl.TransactionRequest(context.Background(), req, opt)
	require.NoError(p.t, err)
	p.t.Cleanup(tx.Terminate)
	return tx
}

// collect reads tx's responses up to and including the final one.
func (p *phone) collect(tx sip.ClientTransaction) []*sip.Response {
	p.t.Helper()
	var out []*sip.Response
	timeout := time.NewTimer(waitFor)
	defer timeout.Stop()
	for {
		select {
		case res := <-tx.Responses():
			out = append(out, res)
			if !res.IsProvisional() {
				return out
			}
		case <-tx.Done():
			p.t.Fatalf("transaction ended without a final response: %v (got %v)", tx.Err(), statuses(out))
		case <-timeout.C:
			p.t.Fatalf("no final response within %v (got %v)", waitFor, statuses(out))
		}
	}
}

// call sends an INVITE and returns it with all its responses.
func (p *phone) call(extra ...sip.Header) (*sip.Request, []*sip.Response) {
	p.t.Helper()
	inv := p.invite(extra...)
	return inv, p.collect(p.send(inv, p.withVia))
}

// inDialog builds a request inside the dialog inv/ok set up.
func (p *phone) inDialog(method sip.RequestMethod, inv *sip.Request, ok *sip.Response) *sip.Request {
	target := sip.Uri{Scheme: "sip"}
	if ct := ok.Contact(); ct != nil {
		target = *ct.Address.Clone()
	}
	req := sip.NewRequest(method, target)
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(ok.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	seq := inv.CSeq().SeqNo
	if method != sip.ACK {
		seq = p.cseq.Add(1)
	}
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	req.SetBody(nil)
	req.SetTransport(p.transport)
	req.SetDestination(p.node.Addr())
	return req
}

// ack sends the ACK for a 2xx to inv (CSeq of inv).
func (p *phone) ack(inv *sip.Request, ok *sip.Response) {
	p.t.Helper()
	ack := p.inDialog(sip.ACK, inv, ok)
	require.NoError(p.t, p.cl.WriteRequest(ack, p.withVia))
}

// request sends an in-dialog request and returns its final response.
func (p *phone) request(method sip.RequestMethod, inv *sip.Request, ok *sip.Response) (*sip.Request, *sip.Response) {
	p.t.Helper()
	req := p.inDialog(method, inv, ok)
	if method == sip.INVITE {
		req.AppendHeader(sip.HeaderClone(inv.Contact()))
		req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		req.SetBody([]byte(offerSDP))
	}
	res := p.collect(p.send(req, p.withVia))
	return req, res[len(res)-1]
}

// cancel sends a CANCEL for inv and returns its final response.
func (p *phone) cancel(inv *sip.Request) *sip.Response {
	p.t.Helper()
	req := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	req.AppendHeader(sip.HeaderClone(inv.Via()))
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(inv.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	req.SetBody(nil)
	req.SetTransport(p.transport)
	req.SetDestination(p.node.Addr())
	res := p.collect(p.send(req, p.keepVia))
	return res[len(res)-1]
}

// options sends an out-of-dialog OPTIONS and returns its final response.
func (p *phone) options() *sip.Response {
	p.t.Helper()
	host, port := splitHostPort(p.t, p.node.Addr())
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: host, Port: port, UriParams: p.uriParams()})
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "probe", Host: p.host}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: host, Port: port}})
	callID := sip.CallIDHeader(sip.GenerateTagN(16))
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	req.SetBody(nil)
	req.SetTransport(p.transport)
	req.SetDestination(p.node.Addr())
	res := p.collect(p.send(req, p.withVia))
	return res[len(res)-1]
}

func statuses(rs []*sip.Response) []int {
	out := make([]int, len(rs))
	for i, r := range rs {
		out[i] = r.StatusCode
	}
	return out
}

func header(m sip.Message, name string) string {
	h := m.GetHeaders(name)
	vals := make([]string, len(h))
	for i, v := range h {
		vals[i] = v.Value()
	}
	return strings.Join(vals, ", ")
}

func splitHostPort(t *testing.T, addr string) (string, int) {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	require.NoError(t, err)
	p, err := strconv.Atoi(port)
	require.NoError(t, err)
	return host, p
}

// eventually waits for cond, polling; a condition, not a sleep.
func eventually(t *testing.T, cond func() bool, msg string, args ...any) {
	t.Helper()
	require.Eventually(t, cond, waitFor, 5*time.Millisecond, append([]any{msg}, args...)...)
}

// record waits until the node has a record for callID satisfying cond.
func record(t *testing.T, n *Node, callID string, cond func(CallRecord) bool) CallRecord {
	t.Helper()
	var last CallRecord
	eventually(t, func() bool {
		r, ok := n.Call(callID)
		last = r
		return ok && cond(r)
	}, "call record %s", callID)
	return last
}

// rawUDP is a bare UDP socket speaking SIP by hand, for tests that count
// packets (retransmissions) or play a record-routing proxy. Its methods
// without a t-failing name are safe off the test goroutine.
type rawUDP struct {
	t    *testing.T
	conn *net.UDPConn
	msgs chan rawMsg
}

type rawMsg struct {
	msg  sip.Message
	from *net.UDPAddr
	at   time.Time
}

func newRawUDP(t *testing.T) *rawUDP {
	t.Helper()
	r, err := openRawUDP(t)
	require.NoError(t, err)
	return r
}

// newRawUDPNoFail is newRawUDP for goroutines other than the test's.
func newRawUDPNoFail(t *testing.T) *rawUDP {
	r, err := openRawUDP(t)
	if err != nil {
		t.Errorf("raw udp: %v", err)
		return nil
	}
	return r
}

func openRawUDP(t *testing.T) (*rawUDP, error) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	r := &rawUDP{t: t, conn: conn, msgs: make(chan rawMsg, 256)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			nr, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			msg, err := sip.ParseMessage(append([]byte(nil), buf[:nr]...))
			if err != nil {
				continue
			}
			select {
			case r.msgs <- rawMsg{msg: msg, from: from, at: time.Now()}:
			default: // nobody is reading any more
			}
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return r, nil
}

func (r *rawUDP) addr() *net.UDPAddr { return r.conn.LocalAddr().(*net.UDPAddr) }

// send writes m to the address to.
func (r *rawUDP) send(m sip.Message, to string) error {
	ua, err := net.ResolveUDPAddr("udp", to)
	if err != nil {
		return err
	}
	_, err = r.conn.WriteToUDP([]byte(m.String()), ua)
	return err
}

func (r *rawUDP) sendTo(m sip.Message, to string) {
	r.t.Helper()
	require.NoError(r.t, r.send(m, to))
}

// wait returns the next message, or false after d.
func (r *rawUDP) wait(d time.Duration) (rawMsg, bool) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case m := <-r.msgs:
		return m, true
	case <-t.C:
		return rawMsg{}, false
	}
}

// next returns the next message, failing the test after waitFor.
func (r *rawUDP) next() rawMsg {
	r.t.Helper()
	m, ok := r.wait(waitFor)
	if !ok {
		r.t.Fatalf("no SIP message within %v", waitFor)
	}
	return m
}

// nextResponse skips other messages until a response with code arrives.
func (r *rawUDP) nextResponse(code int) rawMsg {
	r.t.Helper()
	for {
		m := r.next()
		if res, ok := m.msg.(*sip.Response); ok && res.StatusCode == code {
			return m
		}
	}
}

// invite builds an INVITE as if sent from r.
func (r *rawUDP) invite(n *Node, extra ...sip.Header) *sip.Request {
	a := r.addr()
	host, portStr, _ := net.SplitHostPort(n.Addr())
	port, _ := strconv.Atoi(portStr)
	req := sip.NewRequest(sip.INVITE, sip.Uri{Scheme: "sip", User: "1000", Host: host, Port: port})
	req.AppendHeader(r.via())
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "raw", Host: a.IP.String()}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(10)}}})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", User: "1000", Host: host}})
	callID := sip.CallIDHeader(sip.GenerateTagN(20))
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	req.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "raw", Host: a.IP.String(), Port: a.Port}})
	for _, h := range extra {
		req.AppendHeader(h)
	}
	req.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
	req.SetBody([]byte(offerSDP))
	return req
}

func (r *rawUDP) via() *sip.ViaHeader {
	a := r.addr()
	return &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: "UDP", Host: a.IP.String(), Port: a.Port,
		Params: sip.HeaderParams{{K: "branch", V: sip.GenerateBranch()}}}
}

// ack builds the ACK for a 2xx to inv.
func (r *rawUDP) ack(inv *sip.Request, ok *sip.Response) *sip.Request {
	ack := sip.NewRequest(sip.ACK, *ok.Contact().Address.Clone())
	ack.AppendHeader(r.via())
	maxFwd := sip.MaxForwardsHeader(70)
	ack.AppendHeader(&maxFwd)
	ack.AppendHeader(sip.HeaderClone(inv.From()))
	ack.AppendHeader(sip.HeaderClone(ok.To()))
	ack.AppendHeader(sip.HeaderClone(inv.CallID()))
	ack.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.ACK})
	ack.SetBody(nil)
	return ack
}
