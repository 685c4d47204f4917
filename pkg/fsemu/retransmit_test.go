package fsemu

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOKRetransmittedUntilACK counts the 200 OKs a caller sees before it
// ACKs late, and checks their spacing doubles from T1 up to T2.
func TestOKRetransmittedUntilACK(t *testing.T) {
	const t1, t2 = 40 * time.Millisecond, 160 * time.Millisecond
	n := startNode(t, Config{T1: t1, T2: t2})
	r := newRawUDP(t)
	inv := r.invite(n)
	r.sendTo(inv, n.Addr())

	// First 200 plus four retransmissions: gaps T1, 2*T1, 4*T1 (=T2), T2.
	var oks []rawMsg
	for len(oks) < 5 {
		oks = append(oks, r.nextResponse(200))
	}
	r.sendTo(r.ack(inv, oks[0].msg.(*sip.Response)), n.Addr())

	var gaps []time.Duration
	for i := 1; i < len(oks); i++ {
		gaps = append(gaps, oks[i].at.Sub(oks[i-1].at))
	}
	t.Logf("gaps between 200 OKs: %v", gaps)
	want := []time.Duration{t1, 2 * t1, t2, t2}
	for i, g := range gaps {
		// Timers fire late, never early; allow generous lateness.
		assert.GreaterOrEqual(t, g, want[i]*8/10, "gap %d", i)
		assert.Less(t, g, want[i]+150*time.Millisecond, "gap %d", i)
	}
	for _, m := range oks {
		assert.Equal(t, oks[0].msg.String(), m.msg.String(), "retransmissions are identical")
	}

	rec := record(t, n, inv.CallID().Value(), func(r CallRecord) bool { return len(r.Methods) == 2 })
	assert.Equal(t, []string{"INVITE", "ACK"}, rec.Methods)
	eventually(t, func() bool { return n.Stats().Acks == 1 }, "ACK processed")

	// Once ACKed, the node is quiet: an OPTIONS probe's answer is the next
	// thing on the wire even after well over T2.
	quiet := time.NewTimer(3 * t2)
	<-quiet.C
	probe := optionsFrom(r, n)
	r.sendTo(probe, n.Addr())
	m := r.next()
	res, ok := m.msg.(*sip.Response)
	require.True(t, ok)
	assert.Equal(t, sip.OPTIONS, res.CSeq().MethodName, "no 200 OK after the ACK")

	st := n.Stats()
	assert.Equal(t, int64(0), st.AckTimeouts)
	assert.Equal(t, int64(0), st.ByesSent)
	assert.Equal(t, 1, st.Active)
}

// TestNoACKHangsUp: without an ACK for 64*T1 the node gives up on the 200
// and sends BYE, as FreeSWITCH does.
func TestNoACKHangsUp(t *testing.T) {
	const t1, t2 = 10 * time.Millisecond, 40 * time.Millisecond
	n := startNode(t, Config{T1: t1, T2: t2})
	r := newRawUDP(t)
	inv := r.invite(n)
	start := time.Now()
	r.sendTo(inv, n.Addr())

	oks := 0
	var bye *sip.Request
	for bye == nil {
		m := r.next()
		switch msg := m.msg.(type) {
		case *sip.Response:
			if msg.StatusCode == 200 {
				oks++
			}
		case *sip.Request:
			require.Equal(t, sip.BYE, msg.Method)
			bye = msg
			assert.Equal(t, n.Addr(), m.from.String(), "BYE leaves from the listener")
		}
	}
	assert.GreaterOrEqual(t, time.Since(start), 64*t1*8/10)
	// 0, 10, 30, 70, then every 40ms up to 640ms: about 18 copies.
	assert.GreaterOrEqual(t, oks, 10, "200 OK retransmitted until the deadline")

	fromTag, _ := inv.From().Params.Get("tag")
	rec, _ := n.Call(inv.CallID().Value())
	checkNodeBye(t, n, bye, rec, inv)
	assert.Equal(t, "sip:raw@"+r.addr().String(), bye.Recipient.String(), "Request-URI is the caller's Contact")
	assert.Empty(t, bye.GetHeaders("Route"))
	byeToTag, _ := bye.To().Params.Get("tag")
	assert.Equal(t, fromTag, byeToTag)

	r.sendTo(sip.NewResponseFromRequest(bye, 200, "OK", nil), n.Addr())
	rec = record(t, n, inv.CallID().Value(), func(r CallRecord) bool { return r.Ended })
	assert.Equal(t, EndAckTimeout, rec.EndReason)
	assert.True(t, rec.Answered)
	st := n.Stats()
	assert.Equal(t, int64(1), st.AckTimeouts)
	assert.Equal(t, int64(1), st.ByesSent)
	assert.Equal(t, 0, st.Active)
}

// TestHoldTimeByeThroughRecordRoute: the node's own BYE follows the route
// set the INVITE recorded, so it reaches the record-routing proxy (here a
// bare UDP socket) and not the caller directly.
func TestHoldTimeByeThroughRecordRoute(t *testing.T) {
	n := startNode(t, Config{HoldTime: 50 * time.Millisecond})
	p := newPhone(t, n, "UDP")
	proxy := newRawUDP(t)
	rr1 := &sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: proxy.addr().Port,
		UriParams: sip.HeaderParams{{K: "lr", V: ""}, {K: "sbt", V: "node=fs1"}}}}
	rr2 := &sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: "192.0.2.20", Port: 5060,
		UriParams: sip.HeaderParams{{K: "lr", V: ""}}}}

	inv, rs := p.call(rr1, rr2)
	ok := rs[len(rs)-1]
	require.Equal(t, 200, ok.StatusCode)
	assert.Equal(t, rr1.Value()+", "+rr2.Value(), header(ok, "Record-Route"))
	p.ack(inv, ok)

	m := proxy.next()
	bye, isReq := m.msg.(*sip.Request)
	require.True(t, isReq, "the proxy gets a request: %s", m.msg.String())
	require.Equal(t, sip.BYE, bye.Method)
	assert.Equal(t, n.Addr(), m.from.String(), "BYE leaves from the node's listener")
	assert.Equal(t, inv.Contact().Address.String(), bye.Recipient.String(), "Request-URI is the caller's Contact")
	routes := bye.GetHeaders("Route")
	require.Len(t, routes, 2)
	assert.Equal(t, rr1.Value(), routes[0].Value(), "Route keeps the Record-Route order, top first")
	assert.Equal(t, rr2.Value(), routes[1].Value())
	rec, _ := n.Call(inv.CallID().Value())
	checkNodeBye(t, n, bye, rec, inv)

	proxy.sendTo(sip.NewResponseFromRequest(bye, 200, "OK", nil), bye.Via().SentBy())
	rec = record(t, n, inv.CallID().Value(), func(r CallRecord) bool { return r.Ended })
	assert.Equal(t, EndHold, rec.EndReason)
	assert.Equal(t, []string{"INVITE", "ACK"}, rec.Methods, "the node's own BYE is not a received request")
	select {
	case req := <-p.requests:
		t.Fatalf("the caller got %s directly, bypassing the proxy", req.Method)
	default:
	}
	st := n.Stats()
	assert.Equal(t, int64(1), st.ByesSent)
	assert.Equal(t, int64(0), st.ByesReceived)
	assert.Equal(t, 0, st.Active)

	// A BYE from the caller that crossed ours still gets 200.
	_, res := p.request(sip.BYE, inv, ok)
	assert.Equal(t, 200, res.StatusCode)
}

// TestHoldTimeByeDirect: with no Record-Route the BYE goes to the caller's
// Contact, over the call's transport.
func TestHoldTimeByeDirect(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			n := startNode(t, Config{HoldTime: 20 * time.Millisecond})
			p := newPhone(t, n, tr)
			inv, rs := p.call()
			ok := rs[len(rs)-1]
			require.Equal(t, 200, ok.StatusCode)
			p.ack(inv, ok)
			var bye *sip.Request
			select {
			case bye = <-p.requests:
			case <-time.After(waitFor):
				t.Fatal("no BYE from the node")
			}
			rec, _ := n.Call(inv.CallID().Value())
			checkNodeBye(t, n, bye, rec, inv)
			assert.Equal(t, tr, bye.Via().Transport)
			eventually(t, func() bool { return n.Stats().ByesSent == 1 && n.Active() == 0 }, "call over")
		})
	}
}

// checkNodeBye checks the dialog fields of a BYE the node sent for inv.
func checkNodeBye(t *testing.T, n *Node, bye *sip.Request, rec CallRecord, inv *sip.Request) {
	t.Helper()
	assert.Equal(t, inv.CallID().Value(), bye.CallID().Value())
	fromTag, _ := bye.From().Params.Get("tag")
	assert.Equal(t, rec.ToTag, fromTag, "From is the node's side, with its tag")
	assert.Equal(t, inv.To().Address.String(), bye.From().Address.String())
	toTag, _ := bye.To().Params.Get("tag")
	assert.Equal(t, rec.FromTag, toTag, "To is the caller's side")
	assert.Equal(t, inv.From().Address.String(), bye.To().Address.String())
	assert.Equal(t, sip.BYE, bye.CSeq().MethodName)
	assert.Equal(t, n.Addr(), bye.Via().SentBy(), "Via sent-by is the node")
	assert.Equal(t, DefaultUserAgent, header(bye, "User-Agent"))
}

func optionsFrom(r *rawUDP, n *Node) *sip.Request {
	host, port := splitHostPort(r.t, n.Addr())
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: host, Port: port})
	req.AppendHeader(r.via())
	req.AppendHeader(&sip.FromHeader{Address: sip.Uri{Scheme: "sip", User: "probe", Host: "127.0.0.1"}, Params: sip.HeaderParams{{K: "tag", V: sip.GenerateTagN(8)}}})
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: host, Port: port}})
	callID := sip.CallIDHeader(sip.GenerateTagN(16))
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	req.SetBody(nil)
	return req
}
