package callgen

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var transports = []string{"udp", "tcp"}

func newUAC(t *testing.T, cfg Config) *UAC {
	t.Helper()
	u, err := NewUAC(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { u.Close() })
	return u
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func branchOf(req *sip.Request) string {
	b, _ := req.Via().Params.Get("branch")
	return b
}

func routeValues(req *sip.Request) []string {
	var out []string
	for _, h := range req.GetHeaders("Route") {
		out = append(out, h.Value())
	}
	return out
}

func TestCall(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp, func(t *testing.T) {
			uas := newTestUAS(t)
			cfg := NewConfig(uas.addr())
			cfg.Transport = tp
			u := newUAC(t, cfg)

			r := u.Call(testCtx(t))
			require.True(t, r.OK(), "%+v", r)
			assert.Equal(t, 200, r.SetupStatus)
			assert.Equal(t, 200, r.ReInviteStatus)
			assert.Equal(t, 200, r.ByeStatus)
			assert.False(t, r.RemoteBye)
			assert.Positive(t, r.SetupTime)
			assert.GreaterOrEqual(t, r.AnswerTime, r.SetupTime)
			TP := strings.ToUpper(tp)

			// The INVITE.
			invs := uas.requests(r.CallID, sip.INVITE, 1)
			require.Len(t, invs, 1)
			inv := invs[0]
			via := inv.Via()
			assert.Equal(t, TP, via.Transport)
			assert.Equal(t, u.Addr(), net.JoinHostPort(via.Host, strconv.Itoa(via.Port)))
			assert.True(t, via.Params.Has("rport"))
			assert.True(t, strings.HasPrefix(branchOf(inv), sip.RFC3261BranchMagicCookie))
			contact := inv.Contact().Address
			assert.Equal(t, u.Addr(), net.JoinHostPort(contact.Host, strconv.Itoa(contact.Port)))
			ctp, _ := contact.UriParams.Get("transport")
			if tp == "tcp" {
				assert.Equal(t, "tcp", ctp)
			} else {
				assert.Empty(t, ctp)
			}
			assert.EqualValues(t, 70, inv.MaxForwards().Val())
			assert.Equal(t, sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE}, *inv.CSeq())
			assert.NotEmpty(t, fromTag(inv.From()))
			assert.Empty(t, toTag(inv.To()))
			assert.Equal(t, "sip:1000@127.0.0.1", inv.Recipient.String())
			assert.Equal(t, "application/sdp", inv.ContentType().Value())
			body := string(inv.Body())
			assert.Contains(t, body, "c=IN IP4 127.0.0.1\r\n")
			assert.Contains(t, body, "m=audio "+strconv.Itoa(u.mediaPort)+" RTP/AVP ")

			// ACK for the 2xx: new transaction, remote target, same CSeq number.
			ok := uas.call(r.CallID).ok
			uasContact := ok.Contact().Address.String()
			acks := uas.waitRequests(t, r.CallID, sip.ACK, 1, 1)
			assert.Len(t, acks, uas.call(r.CallID).okSent, "one ACK per 200 sent")
			ack := acks[0]
			assert.Equal(t, uasContact, ack.Recipient.String())
			assert.Equal(t, sip.CSeqHeader{SeqNo: 1, MethodName: sip.ACK}, *ack.CSeq())
			assert.NotEqual(t, branchOf(inv), branchOf(ack))
			assert.Equal(t, toTag(ok.To()), toTag(ack.To()))
			assert.Empty(t, routeValues(ack))
			assert.Equal(t, inv.CallID().Value(), ack.CallID().Value())

			// re-INVITE with SDP, its ACK, then BYE: CSeq 2, 2, 3.
			reinv := uas.requests(r.CallID, sip.INVITE, 2)
			require.Len(t, reinv, 1)
			assert.Equal(t, uasContact, reinv[0].Recipient.String())
			assert.Contains(t, string(reinv[0].Body()), "m=audio ")
			assert.Equal(t, toTag(ok.To()), toTag(reinv[0].To()))
			uas.waitRequests(t, r.CallID, sip.ACK, 2, 1)
			byes := uas.requests(r.CallID, sip.BYE, 3)
			require.Len(t, byes, 1)
			assert.Equal(t, uasContact, byes[0].Recipient.String())
			assert.Equal(t, fromTag(inv.From()), fromTag(byes[0].From()))
			assert.Equal(t, toTag(ok.To()), toTag(byes[0].To()))
		})
	}
}

func TestWildcardLocalAddr(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp, func(t *testing.T) {
			uas := newTestUAS(t)
			cfg := NewConfig(uas.addr())
			cfg.Transport = tp
			cfg.LocalAddr = "0.0.0.0:0"
			u := newUAC(t, cfg)
			assert.True(t, strings.HasPrefix(u.Addr(), "127.0.0.1:"), u.Addr())

			r := u.Call(testCtx(t))
			require.True(t, r.OK(), "%+v", r)
			inv := uas.requests(r.CallID, sip.INVITE, 1)[0]
			assert.Equal(t, "127.0.0.1", inv.Via().Host)
			assert.Equal(t, "127.0.0.1", inv.Contact().Address.Host)
		})
	}
}

func TestBusy(t *testing.T) {
	uas := newTestUAS(t)
	uas.configure(func(b *uasBehaviour) { b.answer = 486 })
	u := newUAC(t, NewConfig(uas.addr()))

	r := u.Call(testCtx(t))
	assert.False(t, r.OK())
	assert.Equal(t, 486, r.SetupStatus)
	assert.Contains(t, r.Err, "486")
	assert.Zero(t, r.ByeStatus)
	assert.Zero(t, r.ReInviteStatus)
	assert.Zero(t, r.AnswerTime)

	d, res, err := u.Invite(testCtx(t))
	require.NoError(t, err)
	assert.Nil(t, d)
	assert.Equal(t, 486, res.StatusCode)
}

func TestCancel(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp, func(t *testing.T) {
			uas := newTestUAS(t)
			uas.configure(func(b *uasBehaviour) { b.answer = 0 })
			cfg := NewConfig(uas.addr())
			cfg.Transport = tp
			u := newUAC(t, cfg)

			var seen []int
			final, err := u.InviteAndCancel(testCtx(t), func(res *sip.Response) bool {
				seen = append(seen, res.StatusCode)
				return res.StatusCode == 180
			})
			require.NoError(t, err)
			require.NotNil(t, final)
			assert.Equal(t, 487, final.StatusCode)
			assert.Equal(t, 180, seen[len(seen)-1])
			callID := final.CallID().Value()
			waitFor(t, &uas.n, "the UAS to see the CANCEL", func() bool { return uas.call(callID).canceled })
		})
	}
}

func TestRemoteBye(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp, func(t *testing.T) {
			uas := newTestUAS(t)
			uas.configure(func(b *uasBehaviour) { b.byeAfterAck = true })
			cfg := NewConfig(uas.addr())
			cfg.Transport = tp
			cfg.Hold = time.Minute // only the far end's BYE can end this call in time
			u := newUAC(t, cfg)

			r := u.Call(testCtx(t))
			require.True(t, r.OK(), "%+v", r)
			assert.True(t, r.RemoteBye)
			assert.Zero(t, r.ByeStatus)
			assert.Zero(t, r.ReInviteStatus)
			waitFor(t, &uas.n, "the answer to the UAS's BYE", func() bool { return uas.call(r.CallID).byeRes != nil })
			assert.Equal(t, 200, uas.call(r.CallID).byeRes.StatusCode)
			assert.Nil(t, u.lookupDialog(r.CallID), "dialog forgotten")
		})
	}
}

func Test2xxRetransmissionsAreAcked(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp, func(t *testing.T) {
			uas := newTestUAS(t)
			uas.configure(func(b *uasBehaviour) { b.extra2xx = 3 })
			cfg := NewConfig(uas.addr())
			cfg.Transport = tp
			u := newUAC(t, cfg)
			ctx := testCtx(t)

			d, res, err := u.Invite(ctx)
			require.NoError(t, err)
			require.Equal(t, 200, res.StatusCode)
			callID := d.CallID()
			waitFor(t, &uas.n, "an ACK for each of 4 200s", func() bool {
				c := uas.call(callID)
				return c.okSent >= 4 && len(uas.requests(callID, sip.ACK, 1)) >= c.okSent
			})
			bye, err := d.Bye(ctx)
			require.NoError(t, err)
			assert.Equal(t, 200, bye.StatusCode)

			c := uas.call(callID)
			acks := uas.requests(callID, sip.ACK, 1)
			assert.Len(t, acks, c.okSent, "exactly one ACK per 200")
			for _, a := range acks {
				assert.Equal(t, branchOf(acks[0]), branchOf(a), "re-sent ACKs are the same ACK")
				assert.Equal(t, sip.ACK, a.CSeq().MethodName)
			}
		})
	}
}

// TestForked2xx: a 2xx from a second To tag (a forked answer) is ACKed and
// hung up; the first dialog is unaffected.
func TestForked2xx(t *testing.T) {
	uas := newTestUAS(t)
	uas.configure(func(b *uasBehaviour) { b.fork = true })
	u := newUAC(t, NewConfig(uas.addr()))
	ctx := testCtx(t)

	d, _, err := u.Invite(ctx)
	require.NoError(t, err)
	forked := func(m sip.RequestMethod) func() bool {
		return func() bool {
			for _, r := range uas.requests(d.CallID(), m, 0) {
				if toTag(r.To()) == "forked" {
					return true
				}
			}
			return false
		}
	}
	waitFor(t, &uas.n, "ACK to the forked 200", forked(sip.ACK))
	waitFor(t, &uas.n, "BYE to the forked 200", forked(sip.BYE))
	bye, err := d.Bye(ctx)
	require.NoError(t, err)
	assert.Equal(t, 200, bye.StatusCode)
	byes := uas.requests(d.CallID(), sip.BYE, 0)
	require.Len(t, byes, 2)
	assert.NotEqual(t, toTag(byes[0].To()), toTag(byes[1].To()))
}

// TestRouteSet checks the UAC side of 12.1.2 and 12.2.1.1 with Record-Route
// entries the UAS adds on behalf of two proxies (both point back at it).
func TestRouteSet(t *testing.T) {
	t.Run("loose", func(t *testing.T) {
		uas := newTestUAS(t)
		nearUAS := "sip:" + uas.addr() + ";lr;hop=p2"
		nearUAC := "sip:" + uas.addr() + ";lr;hop=p1"
		// In a 2xx the proxy nearest the UAC is last in Record-Route.
		uas.configure(func(b *uasBehaviour) { b.addRR = []string{nearUAS, nearUAC} })
		u := newUAC(t, NewConfig(uas.addr()))
		ctx := testCtx(t)

		d, _, err := u.Invite(ctx)
		require.NoError(t, err)
		assert.Equal(t, []string{nearUAC, nearUAS}, d.RouteSet())
		res, err := d.Request(ctx, sip.OPTIONS, nil)
		require.NoError(t, err)
		assert.Equal(t, 405, res.StatusCode, "test UAS has no OPTIONS handler")
		_, err = d.Bye(ctx)
		require.NoError(t, err)

		uasContact := uas.call(d.CallID()).ok.Contact().Address.String()
		want := []string{"<" + nearUAC + ">", "<" + nearUAS + ">"}
		for _, m := range []sip.RequestMethod{sip.ACK, sip.BYE} {
			reqs := uas.waitRequests(t, d.CallID(), m, 0, 1)
			assert.Equal(t, want, routeValues(reqs[0]), m)
			assert.Equal(t, uasContact, reqs[0].Recipient.String(), m)
		}
	})
	t.Run("strict", func(t *testing.T) {
		uas := newTestUAS(t)
		strict := "sip:" + uas.addr() + ";hop=strict"
		uas.configure(func(b *uasBehaviour) { b.addRR = []string{strict} })
		u := newUAC(t, NewConfig(uas.addr()))
		ctx := testCtx(t)

		d, _, err := u.Invite(ctx)
		require.NoError(t, err)
		_, err = d.Bye(ctx)
		require.NoError(t, err)
		uasContact := uas.call(d.CallID()).ok.Contact().Address.String()
		for _, m := range []sip.RequestMethod{sip.ACK, sip.BYE} {
			reqs := uas.waitRequests(t, d.CallID(), m, 0, 1)
			assert.Equal(t, strict, reqs[0].Recipient.String(), m)
			assert.Equal(t, []string{"<" + uasContact + ">"}, routeValues(reqs[0]), m)
		}
	})
}

// TestRelayChain places calls through two stateless record-routing relays:
// UAC → p1 → p2 → UAS. In-dialog requests must reach p1 first with the
// route set p1, p2, and the far end's BYE must come back the same way.
func TestRelayChain(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp, func(t *testing.T) {
			uas := newTestUAS(t)
			p2 := newTestRelay(t, "p2", uas.addr())
			p1 := newTestRelay(t, "p1", p2.addr())
			cfg := NewConfig(p1.addr())
			cfg.Transport = tp
			u := newUAC(t, cfg)
			ctx := testCtx(t)
			rr := func(r *testRelay) string { return "sip:" + r.addr() + ";transport=" + tp + ";lr" }

			d, res, err := u.Invite(ctx)
			require.NoError(t, err)
			require.Equal(t, 200, res.StatusCode)
			assert.Equal(t, []string{rr(p1), rr(p2)}, d.RouteSet())
			re, err := d.Request(ctx, sip.INVITE, d.offer())
			require.NoError(t, err)
			assert.Equal(t, 200, re.StatusCode)
			bye, err := d.Bye(ctx)
			require.NoError(t, err)
			assert.Equal(t, 200, bye.StatusCode)

			callID := d.CallID()
			uas.waitRequests(t, callID, sip.ACK, 2, 1)
			uasContact := uas.call(callID).ok.Contact().Address.String()
			wantP1 := []string{"<" + rr(p1) + ">", "<" + rr(p2) + ">"}
			wantP2 := []string{"<" + rr(p2) + ">"}
			for _, m := range []sip.RequestMethod{sip.ACK, sip.INVITE, sip.BYE} {
				var inDialog []relayed
				for _, s := range p1.requests(m) {
					if len(s.routes) > 0 {
						inDialog = append(inDialog, s)
					}
				}
				require.NotEmpty(t, inDialog, "%s at p1", m)
				for _, s := range inDialog {
					assert.Equal(t, wantP1, s.routes, "%s at p1", m)
					assert.Equal(t, uasContact, s.ruri, "%s at p1", m)
					if tp == "udp" {
						assert.Equal(t, u.Addr(), s.src, "%s sent from the UAC's listener", m)
					}
				}
				atP2 := p2.requests(m)
				require.NotEmpty(t, atP2, "%s at p2", m)
				assert.Equal(t, wantP2, atP2[len(atP2)-1].routes, "%s at p2", m)
				for _, r := range uas.requests(callID, m, 0) {
					assert.Empty(t, routeValues(r), "%s at the UAS", m)
				}
			}

			// The far end hangs up: its BYE crosses p2, p1 to our Contact.
			uas.configure(func(b *uasBehaviour) { b.byeAfterAck = true })
			cfg.Hold = time.Minute
			u2 := newUAC(t, cfg)
			r := u2.Call(ctx)
			require.True(t, r.OK(), "%+v", r)
			assert.True(t, r.RemoteBye)
			waitFor(t, &uas.n, "the answer to the UAS's BYE", func() bool { return uas.call(r.CallID).byeRes != nil })
			assert.Equal(t, 200, uas.call(r.CallID).byeRes.StatusCode)
		})
	}
}

// TestRequestsFromFarEnd: re-INVITE, UPDATE, OPTIONS, INFO inside the dialog
// get 200; requests for unknown dialogs get 481; an out-of-dialog OPTIONS
// gets 200; the far end's BYE ends the dialog.
func TestRequestsFromFarEnd(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp, func(t *testing.T) {
			uas := newTestUAS(t)
			cfg := NewConfig(uas.addr())
			cfg.Transport = tp
			u := newUAC(t, cfg)
			ctx := testCtx(t)

			d, _, err := u.Invite(ctx)
			require.NoError(t, err)
			callID := d.CallID()

			res, err := uas.sendInDialog(callID, sip.INVITE, testSDP("127.0.0.1"))
			require.NoError(t, err)
			assert.Equal(t, 200, res.StatusCode)
			assert.Contains(t, string(res.Body()), "m=audio "+strconv.Itoa(u.mediaPort))
			assert.Equal(t, u.Addr(), net.JoinHostPort(res.Contact().Address.Host, strconv.Itoa(res.Contact().Address.Port)))
			for _, m := range []sip.RequestMethod{sip.UPDATE, sip.OPTIONS, sip.INFO} {
				res, err := uas.sendInDialog(callID, m, nil)
				require.NoError(t, err, m)
				assert.Equal(t, 200, res.StatusCode, m)
			}

			stranger := func(m sip.RequestMethod, inDialog bool) *sip.Response {
				req := sip.NewRequest(m, sip.Uri{Scheme: "sip", User: "callgen", Host: "127.0.0.1", Port: u.port})
				from := &sip.FromHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1"}, Params: sip.NewParams()}
				from.Params.Add("tag", "x1")
				to := &sip.ToHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1"}, Params: sip.NewParams()}
				if inDialog {
					to.Params.Add("tag", "x2")
				}
				req.AppendHeader(from)
				req.AppendHeader(to)
				callID := sip.CallIDHeader("no-such-call")
				req.AppendHeader(&callID)
				req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: m})
				req.SetTransport(strings.ToUpper(tp))
				res, err := uas.cli.Do(ctx, req)
				require.NoError(t, err)
				return res
			}
			assert.Equal(t, 481, stranger(sip.BYE, true).StatusCode)
			assert.Equal(t, 481, stranger(sip.INFO, true).StatusCode)
			assert.Equal(t, 481, stranger(sip.OPTIONS, true).StatusCode)
			assert.Equal(t, 200, stranger(sip.OPTIONS, false).StatusCode)

			res, err = uas.sendInDialog(callID, sip.BYE, nil)
			require.NoError(t, err)
			assert.Equal(t, 200, res.StatusCode)
			select {
			case <-d.RemoteBye():
			default:
				t.Fatal("RemoteBye not closed after the far end's BYE was answered")
			}
			_, err = d.Bye(ctx)
			assert.ErrorIs(t, err, ErrRemoteBye)
		})
	}
}

func TestInviteOptions(t *testing.T) {
	uas := newTestUAS(t)
	cfg := NewConfig(uas.addr())
	cfg.Headers = []sip.Header{sip.NewHeader("X-Config", "yes")}
	u := newUAC(t, cfg)
	ctx := testCtx(t)

	d, _, err := u.Invite(ctx,
		WithMaxForwards(5),
		WithHeader(sip.NewHeader("X-Test", "1")),
		WithRequestURI("sip:2000@"+uas.addr()))
	require.NoError(t, err)
	inv := uas.requests(d.CallID(), sip.INVITE, 1)[0]
	assert.EqualValues(t, 5, inv.MaxForwards().Val())
	assert.Equal(t, "1", inv.GetHeader("X-Test").Value())
	assert.Equal(t, "yes", inv.GetHeader("X-Config").Value())
	assert.Equal(t, "sip:2000@"+uas.addr(), inv.Recipient.String())
	assert.Equal(t, "2000", inv.To().Address.User)
	_, err = d.Bye(ctx)
	require.NoError(t, err)

	_, _, err = u.Invite(ctx, WithRequestURI("not a uri"))
	assert.Error(t, err)
}

func TestTimeouts(t *testing.T) {
	t.Run("no response at all", func(t *testing.T) {
		hole, err := net.ListenPacket("udp", "127.0.0.1:0")
		require.NoError(t, err)
		defer hole.Close()
		cfg := NewConfig(hole.LocalAddr().String())
		cfg.Timeout = 300 * time.Millisecond
		u := newUAC(t, cfg)

		start := time.Now()
		d, res, err := u.Invite(testCtx(t))
		assert.Error(t, err)
		assert.Nil(t, d)
		assert.Nil(t, res)
		assert.Less(t, time.Since(start), 5*time.Second)

		r := u.Call(testCtx(t))
		assert.False(t, r.OK())
		assert.Zero(t, r.SetupStatus)
		assert.NotEmpty(t, r.Err)
	})
	t.Run("ringing past Timeout is canceled", func(t *testing.T) {
		uas := newTestUAS(t)
		uas.configure(func(b *uasBehaviour) { b.answer = 0 })
		cfg := NewConfig(uas.addr())
		cfg.Timeout = 500 * time.Millisecond
		u := newUAC(t, cfg)

		d, res, err := u.Invite(testCtx(t))
		assert.Error(t, err)
		assert.Nil(t, d)
		require.NotNil(t, res)
		assert.Equal(t, 487, res.StatusCode)
		callID := res.CallID().Value()
		waitFor(t, &uas.n, "the CANCEL at the UAS", func() bool { return uas.call(callID).canceled })

		r := u.Call(testCtx(t))
		assert.False(t, r.OK())
		assert.Equal(t, 487, r.SetupStatus)
		assert.NotEmpty(t, r.Err)
	})
	t.Run("context ends while ringing", func(t *testing.T) {
		uas := newTestUAS(t)
		uas.configure(func(b *uasBehaviour) { b.answer = 0 })
		u := newUAC(t, NewConfig(uas.addr()))

		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		_, res, err := u.Invite(ctx)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		require.NotNil(t, res)
		assert.Equal(t, 487, res.StatusCode)
	})
}

func TestRun(t *testing.T) {
	for _, tp := range transports {
		t.Run(tp, func(t *testing.T) {
			uas := newTestUAS(t)
			cfg := NewConfig(uas.addr())
			cfg.Transport = tp
			cfg.Calls = 200
			cfg.Rate = 200
			cfg.Concurrency = 50

			rep, err := Run(testCtx(t), cfg)
			require.NoError(t, err)
			assert.Equal(t, 200, rep.Attempted)
			assert.Equal(t, 200, rep.Succeeded)
			assert.Zero(t, rep.Failed)
			require.Len(t, rep.Results, 200)
			ids := map[string]bool{}
			for _, r := range rep.Results {
				require.True(t, r.OK(), "%+v", r)
				ids[r.CallID] = true
			}
			assert.Len(t, ids, 200, "Call-IDs are unique")
			assert.Positive(t, rep.SetupP50)
			assert.GreaterOrEqual(t, rep.SetupP99, rep.SetupP50)
			// 199 intervals of 5 ms: the ticker paces the calls.
			assert.GreaterOrEqual(t, rep.Duration, 900*time.Millisecond)
		})
	}
}

func TestRunStopsWithContext(t *testing.T) {
	uas := newTestUAS(t)
	cfg := NewConfig(uas.addr())
	cfg.Calls = 1000
	cfg.Rate = 50
	cfg.Hold = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()

	start := time.Now()
	rep, err := Run(ctx, cfg)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	require.NotNil(t, rep)
	assert.Less(t, rep.Attempted, 1000)
	assert.Positive(t, rep.Attempted)
	assert.Equal(t, rep.Attempted, rep.Failed)
	assert.Less(t, time.Since(start), waitTimeout)
	// Every abandoned call was hung up.
	for _, r := range rep.Results {
		if r.SetupStatus == 200 {
			assert.Equal(t, 200, r.ByeStatus, "%+v", r)
		}
	}
}

func TestConfig(t *testing.T) {
	c := NewConfig("10.0.0.1")
	assert.Equal(t, "10.0.0.1:5060", c.Target)
	assert.Equal(t, "sip:1000@10.0.0.1", c.RequestURI)
	assert.True(t, c.ReInvite)
	assert.Equal(t, 1000, c.Concurrency)
	assert.Equal(t, 32*time.Second, c.Timeout)
	assert.Equal(t, "udp", c.Transport)
	assert.Equal(t, "127.0.0.1:0", c.LocalAddr)

	_, err := NewUAC(Config{Target: "127.0.0.1:5060", Transport: "sctp"})
	assert.Error(t, err)
	_, err = NewUAC(Config{})
	assert.Error(t, err)
	_, err = Run(context.Background(), Config{Target: "127.0.0.1:5060"})
	assert.Error(t, err)
}

func TestReport(t *testing.T) {
	ok := CallResult{SetupStatus: 200, ByeStatus: 200}
	assert.True(t, ok.OK())
	assert.True(t, CallResult{SetupStatus: 200, RemoteBye: true}.OK())
	assert.False(t, CallResult{SetupStatus: 200, ReInviteStatus: 488, ByeStatus: 200}.OK())
	assert.False(t, CallResult{SetupStatus: 200}.OK())
	assert.False(t, CallResult{SetupStatus: 200, ByeStatus: 200, Err: "x"}.OK())

	var rs []CallResult
	for i := 1; i <= 100; i++ {
		r := ok
		r.SetupTime = time.Duration(i) * time.Millisecond
		rs = append(rs, r)
	}
	rs = append(rs, CallResult{SetupStatus: 503})
	rep := summarize(rs, time.Second)
	assert.Equal(t, 101, rep.Attempted)
	assert.Equal(t, 100, rep.Succeeded)
	assert.Equal(t, 1, rep.Failed)
	assert.Equal(t, 50*time.Millisecond, rep.SetupP50)
	assert.Equal(t, 99*time.Millisecond, rep.SetupP99)
}
