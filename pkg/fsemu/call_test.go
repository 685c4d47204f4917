package fsemu

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var transports = []string{"UDP", "TCP"}

// sdpVersion returns the version field of an SDP's o= line.
func sdpVersion(t *testing.T, body []byte) uint64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^o=FreeSWITCH (\d+) (\d+) IN IP4 `).FindStringSubmatch(string(body))
	require.NotNil(t, m, "o= line in %q", body)
	v, err := strconv.ParseUint(m[2], 10, 64)
	require.NoError(t, err)
	return v
}

func TestWholeCall(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			// sipgo's client hands each response to its transaction on a
			// goroutine of its own, so back-to-back responses can overtake
			// each other there; small delays keep this test about the node
			// (TestResponseOrderOnTheWire checks the order with no delay).
			n := startNode(t, Config{ID: "fs1", RingDelay: 20 * time.Millisecond, AnswerDelay: 20 * time.Millisecond})
			p := newPhone(t, n, tr)
			// A Record-Route the node must echo; nothing is ever sent there.
			rr := &sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: "192.0.2.10", Port: 5060,
				UriParams: sip.HeaderParams{{K: "lr", V: ""}, {K: "fs", V: "fs1"}}}}

			inv, rs := p.call(rr)
			require.Equal(t, []int{100, 180, 200}, statuses(rs))
			trying, ringing, ok := rs[0], rs[1], rs[2]

			assert.False(t, trying.To().Params.Has("tag"), "100 Trying has no To tag")
			tag, _ := ringing.To().Params.Get("tag")
			require.NotEmpty(t, tag)
			okTag, _ := ok.To().Params.Get("tag")
			assert.Equal(t, tag, okTag, "180 and 200 share the To tag")

			contact := "<sip:mod_sofia@" + n.Addr() + ">"
			if tr == "TCP" {
				contact = "<sip:mod_sofia@" + n.Addr() + ";transport=tcp>"
			}
			for _, r := range []*sip.Response{ringing, ok} {
				assert.Equal(t, contact, header(r, "Contact"), "%d Contact", r.StatusCode)
				assert.Equal(t, rr.Value(), header(r, "Record-Route"), "%d Record-Route", r.StatusCode)
				assert.Equal(t, DefaultUserAgent, header(r, "User-Agent"))
				assert.Contains(t, header(r, "Allow"), "INVITE, ACK, BYE, CANCEL, OPTIONS")
				assert.NotEmpty(t, header(r, "Supported"))
			}
			assert.Equal(t, "application/sdp", header(ok, "Content-Type"))
			body := string(ok.Body())
			for _, line := range []string{"v=0\r\n", "s=FreeSWITCH\r\n", "c=IN IP4 127.0.0.1\r\n", "t=0 0\r\n", "a=rtpmap:0 PCMU/8000\r\n", "a=rtpmap:8 PCMA/8000\r\n", "a=rtpmap:101 telephone-event/8000\r\n"} {
				assert.Contains(t, body, line)
			}
			assert.Regexp(t, `(?m)^m=audio \d+ RTP/AVP 0 8 101\r$`, body)
			v1 := sdpVersion(t, ok.Body())

			p.ack(inv, ok)
			eventually(t, func() bool { return n.Stats().Acks == 1 }, "ACK seen")

			reinv, reOK := p.request(sip.INVITE, inv, ok)
			require.Equal(t, 200, reOK.StatusCode)
			assert.Equal(t, "application/sdp", header(reOK, "Content-Type"))
			assert.Greater(t, sdpVersion(t, reOK.Body()), v1, "re-INVITE answer has a new SDP version")
			p.ack(reinv, reOK)

			_, info := p.request(sip.INFO, inv, ok)
			assert.Equal(t, 200, info.StatusCode)
			_, upd := p.request(sip.UPDATE, inv, ok)
			assert.Equal(t, 200, upd.StatusCode)

			_, bye := p.request(sip.BYE, inv, ok)
			require.Equal(t, 200, bye.StatusCode)

			fromTag, _ := inv.From().Params.Get("tag")
			// Requests are recorded as they arrive, alongside (not before)
			// their handling: wait for the last one.
			rec := record(t, n, inv.CallID().Value(), func(r CallRecord) bool { return r.Ended && len(r.Methods) == 7 })
			assert.Equal(t, []string{"INVITE", "ACK", "INVITE", "ACK", "INFO", "UPDATE", "BYE"}, rec.Methods)
			assert.Equal(t, 200, rec.Status)
			assert.True(t, rec.Answered)
			assert.False(t, rec.Cancelled)
			assert.Equal(t, fromTag, rec.FromTag)
			assert.Equal(t, tag, rec.ToTag)
			assert.Equal(t, EndCallerBye, rec.EndReason)
			assert.Equal(t, tr, rec.Transport)
			assert.True(t, strings.HasPrefix(rec.Source, "127.0.0.1:"), rec.Source)
			if tr == "UDP" {
				assert.Equal(t, p.laddr.String(), rec.Source)
			}

			st := n.Stats()
			assert.Equal(t, Stats{Invites: 1, Answered: 1, ReInvites: 1, Updates: 1, Infos: 1, ByesReceived: 1, Acks: 2}, st)
			assert.Equal(t, 0, n.Active())
			assert.Len(t, n.Calls(), 1)
		})
	}
}

func TestCancelWhileRinging(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			n := startNode(t, Config{AnswerDelay: time.Hour})
			p := newPhone(t, n, tr)

			inv := p.invite()
			tx := p.send(inv, p.withVia)
			waitRinging(t, tx)
			require.Equal(t, 1, n.Active())

			assert.Equal(t, 200, p.cancel(inv).StatusCode)
			final := p.collect(tx)
			assert.Equal(t, 487, final[len(final)-1].StatusCode)

			// The client transaction ACKs the 487; the node records it.
			rec := record(t, n, inv.CallID().Value(), func(r CallRecord) bool { return len(r.Methods) == 3 })
			assert.Equal(t, []string{"INVITE", "CANCEL", "ACK"}, rec.Methods)
			assert.True(t, rec.Cancelled)
			assert.False(t, rec.Answered)
			assert.Equal(t, 487, rec.Status)
			assert.Equal(t, EndCancel, rec.EndReason)
			st := n.Stats()
			assert.Equal(t, int64(1), st.Cancelled)
			assert.Equal(t, int64(0), st.Answered)
			assert.Equal(t, 0, st.Active)
		})
	}
}

// TestCancelRace races CANCEL against the answer many times and checks the
// invariant on the wire: once a 487 is sent, no 200 OK to that INVITE
// follows, including the transaction's retransmission of its final
// response.
func TestCancelRace(t *testing.T) {
	n := startNode(t, Config{AnswerDelay: time.Millisecond})
	const calls = 20
	outcomes := make(chan string, calls)
	for i := 0; i < calls; i++ {
		go func() {
			outcomes <- cancelRaceOnce(t, n)
		}()
	}
	seen := map[string]int{}
	for i := 0; i < calls; i++ {
		select {
		case o := <-outcomes:
			require.NotContains(t, o, "error", o)
			seen[o]++
		case <-time.After(2 * waitFor):
			t.Fatal("race calls did not finish")
		}
	}
	t.Logf("outcomes: %v", seen)
	st := n.Stats()
	assert.Equal(t, int64(calls), st.Invites)
	assert.Equal(t, int64(calls), st.Answered+st.Cancelled)
}

// cancelRaceOnce runs one INVITE/CANCEL race on its own socket. It must not
// call t.Fatal (it runs off the test goroutine), so it reports problems in
// its result.
func cancelRaceOnce(t *testing.T, n *Node) string {
	conn := newRawUDPNoFail(t)
	if conn == nil {
		return "error: socket"
	}
	inv := conn.invite(n)
	if err := conn.send(inv, n.Addr()); err != nil {
		return "error: " + err.Error()
	}
	sawFinal := 0
	for {
		m, ok := conn.wait(waitFor)
		if !ok {
			return "error: timeout"
		}
		res, isRes := m.msg.(*sip.Response)
		if !isRes {
			continue
		}
		switch {
		case res.CSeq().MethodName == sip.INVITE && res.StatusCode == 180 && sawFinal == 0:
			if err := conn.send(cancelFor(inv), n.Addr()); err != nil {
				return "error: " + err.Error()
			}
		case res.CSeq().MethodName == sip.INVITE && res.StatusCode == 200:
			if sawFinal > 0 {
				return "error: 200 OK after 487"
			}
			_ = conn.send(conn.ack(inv, res), n.Addr())
			return "answered"
		case res.CSeq().MethodName == sip.INVITE && res.StatusCode == 487:
			sawFinal++
			if sawFinal == 2 {
				// Timer G resent the final response: still a 487.
				return "cancelled"
			}
		}
	}
}

func cancelFor(inv *sip.Request) *sip.Request {
	req := sip.NewRequest(sip.CANCEL, *inv.Recipient.Clone())
	req.AppendHeader(sip.HeaderClone(inv.Via()))
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	req.AppendHeader(sip.HeaderClone(inv.From()))
	req.AppendHeader(sip.HeaderClone(inv.To()))
	req.AppendHeader(sip.HeaderClone(inv.CallID()))
	req.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	req.SetBody(nil)
	return req
}

func TestEarlyDialogBye(t *testing.T) {
	n := startNode(t, Config{AnswerDelay: time.Hour})
	p := newPhone(t, n, "UDP")
	inv := p.invite()
	tx := p.send(inv, p.withVia)
	ringing := waitRinging(t, tx)
	_, bye := p.request(sip.BYE, inv, ringing)
	assert.Equal(t, 200, bye.StatusCode)
	final := p.collect(tx)
	assert.Equal(t, 487, final[len(final)-1].StatusCode)
	rec := record(t, n, inv.CallID().Value(), func(r CallRecord) bool { return r.Status == 487 })
	assert.True(t, rec.Ended)
	assert.False(t, rec.Answered)
	assert.Equal(t, 0, n.Active())
}

func TestUnknownDialog(t *testing.T) {
	n := startNode(t, Config{})
	p := newPhone(t, n, "UDP")

	// In-dialog requests for a Call-ID the node never saw.
	ghost := p.invite()
	ghostOK := sip.NewResponseFromRequest(ghost, 200, "OK", nil)
	ghostOK.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1"}})
	for _, m := range []sip.RequestMethod{sip.BYE, sip.INVITE, sip.INFO, sip.UPDATE} {
		_, res := p.request(m, ghost, ghostOK)
		assert.Equal(t, 481, res.StatusCode, "%s", m)
		assert.Equal(t, reasonNoDialog, res.Reason)
	}

	// A known Call-ID with the wrong To tag is another dialog.
	inv, rs := p.call()
	ok := rs[len(rs)-1]
	require.Equal(t, 200, ok.StatusCode)
	p.ack(inv, ok)
	wrong := sip.NewResponseFromRequest(inv, 200, "OK", nil) // a To tag of its own
	wrong.AppendHeader(sip.HeaderClone(ok.Contact()))
	_, res := p.request(sip.BYE, inv, wrong)
	assert.Equal(t, 481, res.StatusCode)

	// An unmatched CANCEL.
	never := p.invite()
	never.PrependHeader(p.via())
	assert.Equal(t, 481, p.cancel(never).StatusCode)

	// The call itself is untouched.
	_, bye := p.request(sip.BYE, inv, ok)
	assert.Equal(t, 200, bye.StatusCode)
	// ... and gone afterwards.
	_, res = p.request(sip.INFO, inv, ok)
	assert.Equal(t, 481, res.StatusCode)

	assert.Equal(t, int64(7), n.Stats().NoDialog)
	rec := record(t, n, inv.CallID().Value(), func(r CallRecord) bool { return len(r.Methods) == 5 })
	assert.Equal(t, []string{"INVITE", "ACK", "BYE", "BYE", "INFO"}, rec.Methods)
}

// TestResponseOrderOnTheWire checks what the node sends for an INVITE with
// no delays, packet by packet: 100 (no tag), 180 and 200 (same tag).
func TestResponseOrderOnTheWire(t *testing.T) {
	n := startNode(t, Config{})
	r := newRawUDP(t)
	inv := r.invite(n)
	r.sendTo(inv, n.Addr())
	var got []int
	var tags []string
	for len(got) < 3 {
		m := r.next()
		res, ok := m.msg.(*sip.Response)
		require.True(t, ok)
		got = append(got, res.StatusCode)
		tag, _ := res.To().Params.Get("tag")
		tags = append(tags, tag)
		assert.Equal(t, n.Addr(), m.from.String(), "responses leave from the listener")
	}
	require.Equal(t, []int{100, 180, 200}, got)
	assert.Empty(t, tags[0])
	assert.NotEmpty(t, tags[1])
	assert.Equal(t, tags[1], tags[2])
}

// waitRinging reads tx's responses until the 180, whatever came before it
// (the client may see 100 and 180 in either order).
func waitRinging(t *testing.T, tx sip.ClientTransaction) *sip.Response {
	t.Helper()
	timeout := time.NewTimer(waitFor)
	defer timeout.Stop()
	for {
		select {
		case res := <-tx.Responses():
			if res.StatusCode == 180 {
				return res
			}
			require.Equal(t, 100, res.StatusCode)
		case <-timeout.C:
			t.Fatal("no 180 Ringing")
		}
	}
}

// TestInviteRetransmission: a retransmitted INVITE is recorded but is not
// a new call; the transaction answers it with the last provisional.
func TestInviteRetransmission(t *testing.T) {
	n := startNode(t, Config{AnswerDelay: time.Hour})
	r := newRawUDP(t)
	inv := r.invite(n)
	r.sendTo(inv, n.Addr())
	r.nextResponse(180)
	r.sendTo(inv, n.Addr())
	r.nextResponse(180)

	rec := record(t, n, inv.CallID().Value(), func(r CallRecord) bool { return len(r.Methods) == 2 })
	assert.Equal(t, []string{"INVITE", "INVITE"}, rec.Methods)
	st := n.Stats()
	assert.Equal(t, int64(1), st.Invites)
	assert.Equal(t, 1, st.Active)
}

// TestSameCallIDAgain: after a failure a caller may retry with the same
// Call-ID and a higher CSeq (a new attempt), while the same CSeq over a
// new branch is a merged request (RFC 3261 8.2.2.2) and gets 482.
func TestSameCallIDAgain(t *testing.T) {
	n := startNode(t, Config{})
	r := newRawUDP(t)

	n.Pause()
	inv := r.invite(n)
	r.sendTo(inv, n.Addr())
	r.nextResponse(503)
	n.Resume()

	retry := r.invite(n)
	retry.ReplaceHeader(sip.HeaderClone(inv.CallID()))
	retry.ReplaceHeader(sip.HeaderClone(inv.From()))
	retry.CSeq().SeqNo = 2
	r.sendTo(retry, n.Addr())
	ok := r.nextResponse(200).msg.(*sip.Response)
	r.sendTo(r.ack(retry, ok), n.Addr())

	merged := r.invite(n) // new branch
	merged.ReplaceHeader(sip.HeaderClone(inv.CallID()))
	merged.ReplaceHeader(sip.HeaderClone(inv.From()))
	merged.CSeq().SeqNo = 2
	r.sendTo(merged, n.Addr())
	r.nextResponse(482)

	rec := record(t, n, inv.CallID().Value(), func(r CallRecord) bool { return len(r.Methods) == 4 })
	assert.Equal(t, []string{"INVITE", "INVITE", "ACK", "INVITE"}, rec.Methods)
	assert.Equal(t, 200, rec.Status)
	assert.True(t, rec.Answered)
	st := n.Stats()
	assert.Equal(t, int64(2), st.Invites)
	assert.Equal(t, int64(1), st.Rejected503)
	assert.Equal(t, 1, st.Active)
}
