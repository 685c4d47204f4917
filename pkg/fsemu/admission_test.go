package fsemu

import (
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// requireMaxCalls checks a 503 the way mod_sofia sends it.
func requireMaxCalls(t *testing.T, res *sip.Response) {
	t.Helper()
	require.Equal(t, 503, res.StatusCode)
	assert.Equal(t, "Maximum Calls In Progress", res.Reason)
	assert.Equal(t, "300", header(res, "Retry-After"))
	assert.Equal(t, DefaultUserAgent, header(res, "User-Agent"))
	tag, _ := res.To().Params.Get("tag")
	assert.NotEmpty(t, tag)
}

func TestPaused(t *testing.T) {
	for _, tc := range []struct {
		name             string
		optionsAlways200 bool
		wantOptions      int
	}{
		{"fs-1.11.0", false, 503},
		{"fs-1.11.1+", true, 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := startNode(t, Config{OptionsAlways200: tc.optionsAlways200})
			p := newPhone(t, n, "UDP")

			res := p.options()
			require.Equal(t, 200, res.StatusCode)
			assert.Equal(t, "<sip:"+n.Addr()+">", header(res, "Contact"))
			assert.Equal(t, "application/sdp", header(res, "Accept"))
			assert.Equal(t, allowValue, header(res, "Allow"))
			assert.Equal(t, "path, replaces", header(res, "Supported"))

			n.Pause()
			require.True(t, n.Paused())
			inv, rs := p.call()
			require.Equal(t, []int{503}, statuses(rs), "no 100 Trying before the 503")
			requireMaxCalls(t, rs[0])

			res = p.options()
			require.Equal(t, tc.wantOptions, res.StatusCode)
			if tc.wantOptions == 503 {
				requireMaxCalls(t, res)
			}

			n.Resume()
			require.Equal(t, 200, p.options().StatusCode)
			_, rs = p.call()
			require.Equal(t, 200, rs[len(rs)-1].StatusCode)

			rec := record(t, n, inv.CallID().Value(), func(r CallRecord) bool { return len(r.Methods) == 2 })
			assert.Equal(t, []string{"INVITE", "ACK"}, rec.Methods, "the 503's ACK is recorded")
			assert.Equal(t, 503, rec.Status)
			assert.Equal(t, EndRejected, rec.EndReason)
			st := n.Stats()
			assert.Equal(t, int64(2), st.Invites)
			assert.Equal(t, int64(1), st.Rejected503)
			assert.Equal(t, int64(1), st.Answered)
			assert.Equal(t, int64(3), st.Options)
		})
	}
}

func TestMaxSessions(t *testing.T) {
	n := startNode(t, Config{MaxSessions: 1})
	p := newPhone(t, n, "UDP")

	inv1, rs := p.call()
	ok1 := rs[len(rs)-1]
	require.Equal(t, 200, ok1.StatusCode)
	p.ack(inv1, ok1)
	require.Equal(t, 1, n.Active())

	_, rs = p.call()
	require.Equal(t, []int{503}, statuses(rs))
	requireMaxCalls(t, rs[0])
	requireMaxCalls(t, p.options())

	_, bye := p.request(sip.BYE, inv1, ok1)
	require.Equal(t, 200, bye.StatusCode)
	require.Equal(t, 0, n.Active())
	require.Equal(t, 200, p.options().StatusCode)

	// Ringing calls count too.
	n.SetAnswerDelay(time.Hour)
	ringing := p.invite()
	tx := p.send(ringing, p.withVia)
	waitRinging(t, tx)
	require.Equal(t, 1, n.Active())
	_, rs = p.call()
	require.Equal(t, []int{503}, statuses(rs))

	// Raising the cap lets the next one in.
	n.SetMaxSessions(2)
	n.SetAnswerDelay(0)
	inv3, rs := p.call()
	require.Equal(t, 200, rs[len(rs)-1].StatusCode)
	p.ack(inv3, rs[len(rs)-1])
	require.Equal(t, 2, n.Active())

	st := n.Stats()
	assert.Equal(t, int64(2), st.Rejected503)
	assert.Equal(t, int64(5), st.Invites)
	assert.Equal(t, 2, st.Active)
}

func TestFail503Ratio(t *testing.T) {
	n := startNode(t, Config{Fail503Ratio: 1})
	p := newPhone(t, n, "UDP")
	_, rs := p.call()
	require.Equal(t, []int{503}, statuses(rs))
	requireMaxCalls(t, rs[0])
	// Fault injection is not a busy node: OPTIONS stay 200.
	require.Equal(t, 200, p.options().StatusCode)

	n.SetFaults(0, 0)
	_, rs = p.call()
	require.Equal(t, 200, rs[len(rs)-1].StatusCode)
	st := n.Stats()
	assert.Equal(t, int64(1), st.Rejected503)
	assert.Equal(t, int64(1), st.Answered)
}

func TestDropRatio(t *testing.T) {
	n := startNode(t, Config{DropRatio: 1})
	r := newRawUDP(t)
	inv := r.invite(n)
	callID := inv.CallID().Value()
	// The INVITE and two retransmissions (same branch, as a UAC's Timer A).
	for i := 0; i < 3; i++ {
		r.sendTo(inv, n.Addr())
	}
	rec := record(t, n, callID, func(r CallRecord) bool { return len(r.Methods) == 3 })
	assert.Equal(t, []string{"INVITE", "INVITE", "INVITE"}, rec.Methods)
	assert.Equal(t, 0, rec.Status)

	// Whatever the node sends comes in order with its answer to this probe,
	// so nothing before it means nothing was sent for the INVITE.
	probe := sip.NewRequest(sip.OPTIONS, inv.Recipient)
	probe.AppendHeader(r.via())
	probe.AppendHeader(sip.HeaderClone(inv.From()))
	probe.AppendHeader(&sip.ToHeader{Address: inv.To().Address})
	probeID := sip.CallIDHeader("probe-" + callID)
	probe.AppendHeader(&probeID)
	probe.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	probe.SetBody(nil)
	r.sendTo(probe, n.Addr())
	m := r.next()
	res, ok := m.msg.(*sip.Response)
	require.True(t, ok)
	assert.Equal(t, sip.OPTIONS, res.CSeq().MethodName, "first answer is the probe's, not the INVITE's")

	st := n.Stats()
	assert.Equal(t, int64(1), st.Invites, "retransmissions are not new calls")
	assert.Equal(t, int64(1), st.Dropped)
	assert.Equal(t, 0, st.Active)

	// Back to normal, a new call goes through.
	n.SetFaults(0, 0)
	inv2 := r.invite(n)
	r.sendTo(inv2, n.Addr())
	r.nextResponse(200)
}
