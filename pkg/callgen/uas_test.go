package callgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
)

// waitTimeout bounds every wait in these tests; nothing should take close
// to it.
const waitTimeout = 10 * time.Second

// notifier wakes waiters on every state change (no polling, no sleeps).
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

func (n *notifier) broadcast() {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch != nil {
		close(n.ch)
	}
	n.ch = make(chan struct{})
}

// waitFor blocks until cond (called under no lock of ours) holds, woken by n.
func waitFor(t *testing.T, n *notifier, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		ch := n.wait()
		if cond() {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// testUAS is a small UAS on sipgo, standing in for a FreeSWITCH node: it
// answers INVITE 100/180/200+SDP (Record-Route copied), re-sends the 200
// until the ACK, answers re-INVITE and BYE, and can hang up itself.
type testUAS struct {
	t    *testing.T
	ua   *sipgo.UserAgent
	srv  *sipgo.Server
	cli  *sipgo.Client
	host string
	port int
	udp  net.PacketConn
	tcp  net.Listener
	wg   sync.WaitGroup // serve loops and handlers
	done chan struct{}
	ctx  context.Context
	stop context.CancelFunc

	n      notifier
	mu     sync.Mutex
	closed bool
	b      uasBehaviour
	calls  map[string]*uasCall
}

// uasBehaviour is how the UAS treats new INVITEs; change it with configure.
type uasBehaviour struct {
	answer      int      // final status (default 200; 0 = ring until CANCEL)
	extra2xx    int      // 200 retransmissions, each sent after the previous ACK
	byeAfterAck bool     // hang up as soon as the ACK arrives
	fork        bool     // after the ACK, answer 200 again from a second To tag
	addRR       []string // Record-Route URIs put on top of the 200's list
}

func (s *testUAS) configure(f func(b *uasBehaviour)) {
	s.mu.Lock()
	f(&s.b)
	s.mu.Unlock()
}

type uasCall struct {
	invite    *sip.Request  // the initial INVITE, with our To tag
	ok        *sip.Response // our 200
	transport string
	reqs      []*sip.Request // every request of the call, in arrival order
	canceled  bool
	byeRes    *sip.Response // answer to our BYE
	okSent    int           // 200s sent to the INVITE, retransmissions included
	seq       uint32        // our CSeq
}

func newTestUAS(t *testing.T) *testUAS {
	t.Helper()
	s := &testUAS{t: t, b: uasBehaviour{answer: 200}, calls: make(map[string]*uasCall), done: make(chan struct{})}
	var err error
	s.udp, s.tcp, err = listenPair("127.0.0.1", "0")
	require.NoError(t, err)
	s.host, s.port = "127.0.0.1", s.udp.LocalAddr().(*net.UDPAddr).Port
	s.ua, err = sipgo.NewUA()
	require.NoError(t, err)
	s.srv, err = sipgo.NewServer(s.ua)
	require.NoError(t, err)
	s.cli, err = sipgo.NewClient(s.ua)
	require.NoError(t, err)
	s.ctx, s.stop = context.WithCancel(context.Background())
	// ACKs are counted as the transport parses them: sipgo's transaction
	// layer swallows a re-sent ACK (same branch) while the first one's
	// transaction still exists, and every ACK matters here.
	s.ua.TransportLayer().OnMessage(func(msg sip.Message) {
		if req, ok := msg.(*sip.Request); ok && req.IsAck() && req.CallID() != nil {
			s.record(req.CallID().Value(), req)
		}
	})
	s.srv.OnInvite(s.handler(s.onInvite))
	s.srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	s.srv.OnBye(s.handler(s.onBye))
	ready := &readyPacketConn{PacketConn: s.udp, ready: make(chan struct{})}
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.srv.ServeUDP(ready) }()
	go func() { defer s.wg.Done(); s.srv.ServeTCP(s.tcp) }()
	<-ready.ready
	t.Cleanup(s.close)
	return s
}

// handler tracks h so that close waits for it; after close it is skipped.
func (s *testUAS) handler(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return
		}
		s.wg.Add(1)
		s.mu.Unlock()
		defer s.wg.Done()
		h(req, tx)
	}
}

func (s *testUAS) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	close(s.done)
	s.stop()
	s.udp.Close()
	s.tcp.Close()
	s.ua.Close()
	s.wg.Wait()
}

func (s *testUAS) addr() string { return net.JoinHostPort(s.host, strconv.Itoa(s.port)) }

func (s *testUAS) contact(transport string) *sip.ContactHeader {
	c := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "uas", Host: s.host, Port: s.port}}
	if transport == "TCP" {
		c.Address.UriParams = sip.NewParams()
		c.Address.UriParams.Add("transport", "tcp")
	}
	return c
}

func (s *testUAS) record(callID string, req *sip.Request) *uasCall {
	s.mu.Lock()
	c := s.calls[callID]
	if c == nil {
		c = &uasCall{}
		s.calls[callID] = c
	}
	c.reqs = append(c.reqs, req)
	s.mu.Unlock()
	s.n.broadcast()
	return c
}

// call returns a snapshot of a call's state.
func (s *testUAS) call(callID string) uasCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.calls[callID]
	if c == nil {
		return uasCall{}
	}
	cp := *c
	cp.reqs = append([]*sip.Request(nil), c.reqs...)
	return cp
}

// requests are the call's requests of method (and CSeq number, if nonzero).
func (s *testUAS) requests(callID string, method sip.RequestMethod, seq uint32) []*sip.Request {
	var out []*sip.Request
	for _, r := range s.call(callID).reqs {
		if r.Method == method && (seq == 0 || r.CSeq().SeqNo == seq) {
			out = append(out, r)
		}
	}
	return out
}

func (s *testUAS) waitRequests(t *testing.T, callID string, method sip.RequestMethod, seq uint32, n int) []*sip.Request {
	t.Helper()
	waitFor(t, &s.n, fmt.Sprintf("%d %s (CSeq %d) at the UAS", n, method, seq), func() bool {
		return len(s.requests(callID, method, seq)) >= n
	})
	return s.requests(callID, method, seq)
}

func (s *testUAS) respond(tx sip.ServerTransaction, res *sip.Response) {
	_ = tx.Respond(res) // a failure shows up as a test's missing message
}

func (s *testUAS) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	callID := req.CallID().Value()
	c := s.record(callID, req)
	if toTag(req.To()) != "" { // re-INVITE
		res := sip.NewResponseFromRequest(req, 200, "OK", nil)
		res.AppendHeader(s.contact(req.Transport()))
		ct := sip.ContentTypeHeader("application/sdp")
		res.AppendHeader(&ct)
		res.SetBody(testSDP(s.host))
		s.respond(tx, res)
		return
	}

	canceled := make(chan struct{})
	var once sync.Once
	tx.OnCancel(func(*sip.Request) { once.Do(func() { close(canceled) }) })

	inv := req.Clone()
	inv.To().Params.Add("tag", sip.GenerateTagN(12))
	s.mu.Lock()
	c.invite, c.transport = inv, req.Transport()
	b := s.b
	s.mu.Unlock()

	s.respond(tx, sip.NewResponseFromRequest(req, 100, "Trying", nil))
	ring := sip.NewResponseFromRequest(inv, 180, "Ringing", nil)
	ring.AppendHeader(s.contact(c.transport))
	s.respond(tx, ring)

	switch {
	case b.answer == 0:
		select {
		case <-canceled:
			s.mu.Lock()
			c.canceled = true
			s.mu.Unlock()
			s.n.broadcast()
		case <-s.done:
		}
		return
	case b.answer >= 300:
		s.respond(tx, sip.NewResponseFromRequest(inv, b.answer, "Refused", nil))
		return
	}

	ok := sip.NewResponseFromRequest(inv, 200, "OK", nil)
	if len(b.addRR) > 0 {
		var hs []sip.Header
		for _, v := range b.addRR {
			var rr sip.RecordRouteHeader
			if sip.ParseUri(strings.Trim(v, "<>"), &rr.Address) == nil {
				hs = append(hs, &rr)
			}
		}
		ok.PrependHeader(hs...)
	}
	ok.AppendHeader(s.contact(c.transport))
	ct := sip.ContentTypeHeader("application/sdp")
	ok.AppendHeader(&ct)
	ok.SetBody(testSDP(s.host))
	s.mu.Lock()
	c.ok = ok
	s.mu.Unlock()

	sendOK := func() {
		s.mu.Lock()
		c.okSent++
		s.mu.Unlock()
		s.respond(tx, ok)
	}
	sendOK()
	// 13.3.1.4: re-send the 2xx, T1 doubling to T2, until the ACK.
	acks := func() int { return len(s.requests(callID, sip.ACK, inv.CSeq().SeqNo)) }
	untilAck := func(n int) bool {
		interval := sip.T1
		deadline := time.NewTimer(64 * sip.T1)
		defer deadline.Stop()
		for {
			ch := s.n.wait()
			if acks() >= n {
				return true
			}
			select {
			case <-ch:
			case <-time.After(interval):
				sendOK()
				interval = min(2*interval, sip.T2)
			case <-deadline.C:
				return false
			case <-s.done:
				return false
			}
		}
	}
	if !untilAck(1) {
		return
	}
	for i := 1; i <= b.extra2xx; i++ {
		sendOK() // a retransmission the UAC must ACK again
		if !untilAck(1 + i) {
			return
		}
	}
	if b.fork {
		forked := req.Clone()
		forked.To().Params.Add("tag", "forked")
		ok2 := sip.NewResponseFromRequest(forked, 200, "OK", nil)
		ok2.AppendHeader(s.contact(c.transport))
		ok2.SetBody(testSDP(s.host))
		s.respond(tx, ok2)
	}
	if b.byeAfterAck {
		res, err := s.sendInDialog(callID, sip.BYE, nil)
		s.mu.Lock()
		c.byeRes = res
		s.mu.Unlock()
		s.n.broadcast()
		_ = err // a failed BYE leaves byeRes nil, which the test checks
	}
}

func (s *testUAS) onBye(req *sip.Request, tx sip.ServerTransaction) {
	s.mu.Lock()
	_, known := s.calls[req.CallID().Value()]
	s.mu.Unlock()
	if !known {
		s.respond(tx, sip.NewResponseFromRequest(req, 481, "Call/Transaction Does Not Exist", nil))
		return
	}
	s.record(req.CallID().Value(), req)
	s.respond(tx, sip.NewResponseFromRequest(req, 200, "OK", nil))
}

// sendInDialog sends a request from the UAS side of the call (route set =
// the INVITE's Record-Route in order, target = its Contact); a 2xx to an
// INVITE is ACKed.
func (s *testUAS) sendInDialog(callID string, method sip.RequestMethod, body []byte) (*sip.Response, error) {
	s.mu.Lock()
	c := s.calls[callID]
	if c == nil || c.ok == nil {
		s.mu.Unlock()
		return nil, errors.New("no such answered call")
	}
	c.seq++
	seq, inv, ok, transport := c.seq, c.invite, c.ok, c.transport
	s.mu.Unlock()

	build := func(m sip.RequestMethod, res *sip.Response) *sip.Request {
		req := sip.NewRequest(m, *inv.Contact().Address.Clone())
		for _, h := range inv.GetHeaders("Record-Route") {
			uri, err := routeURI(h)
			if err == nil {
				req.AppendHeader(&sip.RouteHeader{Address: uri})
			}
		}
		maxFwd := sip.MaxForwardsHeader(70)
		req.AppendHeader(&maxFwd)
		from := ok.To().AsFrom()
		req.AppendHeader(&from)
		to := inv.From().AsTo()
		req.AppendHeader(&to)
		req.AppendHeader(sip.HeaderClone(inv.CallID()))
		req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: m})
		if m == sip.INVITE {
			req.AppendHeader(s.contact(transport))
		}
		if body != nil && m != sip.ACK {
			ct := sip.ContentTypeHeader("application/sdp")
			req.AppendHeader(&ct)
			req.SetBody(body)
		} else {
			req.SetBody(nil)
		}
		req.SetTransport(transport)
		return req
	}
	ctx, cancel := context.WithTimeout(s.ctx, waitTimeout)
	defer cancel()
	res, err := s.cli.Do(ctx, build(method, nil), sipgo.ClientRequestAddVia)
	if err != nil {
		return nil, err
	}
	if method == sip.INVITE && res.IsSuccess() {
		if err := s.cli.WriteRequest(build(sip.ACK, res), sipgo.ClientRequestAddVia); err != nil {
			return res, err
		}
	}
	return res, nil
}

func testSDP(host string) []byte {
	return []byte("v=0\r\no=uas 1 1 IN IP4 " + host + "\r\ns=uas\r\nc=IN IP4 " + host +
		"\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
}
