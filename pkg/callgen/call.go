package callgen

import (
	"context"
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipbalancer/sipbalancer/pkg/rtpstream"
)

// CallResult is the outcome of one call.
type CallResult struct {
	CallID         string        `json:"call_id"`
	SetupStatus    int           `json:"setup_status"`    // final status of the initial INVITE (0 = no final response)
	SetupTime      time.Duration `json:"setup_time"`      // INVITE sent → first 18x or 2xx
	AnswerTime     time.Duration `json:"answer_time"`     // INVITE sent → 2xx
	ReInviteStatus int           `json:"reinvite_status"` // 0 if not sent or no answer
	ByeStatus      int           `json:"bye_status"`      // 0 if not sent or no answer
	RemoteBye      bool          `json:"remote_bye"`      // the far end hung up first (we answered its BYE 200)
	Err            string        `json:"error,omitempty"` // first error, empty if the call completed

	// Media, with Config.RTP, of an answered call: RTP is true when it was
	// measured. RTPLost is the received stream's sequence-number loss;
	// RTPEchoed counts our packets that came back (a far end that echoes,
	// such as FreeSWITCH's echo application), with their mean round trip
	// in RTPRTT. RTPLoss is the loss ratio by the best measure at hand
	// (rtpstream.Stats.Loss): by echoes, else by sequence numbers, else 1
	// when nothing came back at all. RTPStopped: the far end's media
	// stopped at least RTPStopGap before we hung up, as when the node
	// carrying the call dies.
	RTP         bool          `json:"rtp,omitempty"`
	RTPSent     int64         `json:"rtp_sent,omitempty"`
	RTPReceived int64         `json:"rtp_received,omitempty"`
	RTPLost     int64         `json:"rtp_lost,omitempty"`
	RTPEchoed   int64         `json:"rtp_echoed,omitempty"`
	RTPLoss     float64       `json:"rtp_loss,omitempty"`
	RTPJitter   time.Duration `json:"rtp_jitter,omitempty"`
	RTPRTT      time.Duration `json:"rtp_rtt,omitempty"`
	RTPStopped  bool          `json:"rtp_stopped,omitempty"`
	RTPError    string        `json:"rtp_error,omitempty"` // no media could be sent (no usable SDP answer)
}

// RTPStopGap is the silence at the end of a call that counts as media
// stopped in mid-call: 10 packets. Shorter gaps are left alone: a loaded
// machine can hold up a stream that long without anything being wrong.
const RTPStopGap = 200 * time.Millisecond

// setMedia fills the media fields from a session's figures.
func (r *CallResult) setMedia(st rtpstream.Stats) {
	r.RTP = true
	r.RTPSent, r.RTPReceived, r.RTPLost, r.RTPEchoed = st.Sent, st.Recv.Received, st.Recv.Lost, st.Echoed
	r.RTPLoss = st.Loss()
	r.RTPJitter, r.RTPRTT = st.Recv.Jitter, st.RTTMean
	r.RTPStopped = st.Recv.Received > 0 && st.TailSilence() >= RTPStopGap
}

// OK reports a complete call: INVITE 2xx, re-INVITE 2xx if one was sent,
// and BYE 2xx or a BYE from the far end; with no error on the way.
func (r CallResult) OK() bool {
	if r.Err != "" || !is2xx(r.SetupStatus) {
		return false
	}
	if r.ReInviteStatus != 0 && !is2xx(r.ReInviteStatus) {
		return false
	}
	return is2xx(r.ByeStatus) || r.RemoteBye
}

func is2xx(code int) bool { return code >= 200 && code < 300 }

// Call places one whole call as configured: INVITE (+ACK), Hold, a
// re-INVITE when Config.ReInvite, Hold, BYE. A BYE from the far end ends it
// early. If ctx ends mid-call the call is hung up (bounded) and the error
// recorded. With Config.RTP, media flows from the answer until the hang-up
// (ours or the far end's) and its figures are in the result.
func (u *UAC) Call(ctx context.Context) CallResult {
	var r CallResult
	fail := func(err error) CallResult {
		if r.Err == "" && err != nil {
			r.Err = err.Error()
		}
		return r
	}

	var opts []InviteOption
	var ms *rtpstream.Session
	if u.cfg.RTP {
		var err error
		ms, err = rtpstream.Listen(u.mediaIP, u.codec, true)
		if err != nil {
			return fail(fmt.Errorf("callgen: RTP socket: %w", err))
		}
		// Closed after the hang-up: the far end's media may run until our
		// BYE reaches it.
		defer ms.Close()
		opts = append(opts, func(o *inviteOptions) { o.mediaPort = ms.Port() })
	}
	// stopMedia ends our stream and takes the figures, before hanging up.
	stopMedia := func() {
		if ms != nil && !r.RTP && r.RTPError == "" {
			ms.Stop()
			r.setMedia(ms.Stats())
		}
	}

	req, err := u.buildInvite(opts)
	if err != nil {
		return fail(err)
	}
	r.CallID = req.CallID().Value()
	out, err := u.runInvite(ctx, req, nil, nil, "")
	r.SetupTime, r.AnswerTime, r.ByeStatus = out.setup, out.answer, out.bye
	if out.final != nil {
		r.SetupStatus = out.final.StatusCode
	}
	d := out.dialog
	if err != nil {
		fail(err)
		if d != nil { // answered, but broken: still hang up
			r.ByeStatus, _ = u.hangup(ctx, d)
		}
		return r
	}
	if d == nil {
		return fail(fmt.Errorf("INVITE answered %d %s", out.final.StatusCode, out.final.Reason))
	}
	if ms != nil {
		if md, err := rtpstream.ParseSDP(out.final.Body()); err != nil {
			r.RTPError = "answer: " + err.Error()
		} else {
			ms.Start(md.Addr)
		}
	}
	finish := func(cause error) CallResult {
		stopMedia()
		return u.finish(ctx, &r, d, cause)
	}

	if ended, err := u.hold(ctx, d); ended || err != nil {
		return finish(err)
	}
	if u.cfg.ReInvite {
		res, err := d.Request(ctx, sip.INVITE, d.offer())
		if res != nil {
			r.ReInviteStatus = res.StatusCode
			if !res.IsSuccess() {
				fail(fmt.Errorf("re-INVITE answered %d %s", res.StatusCode, res.Reason))
			}
		}
		if err != nil {
			fail(fmt.Errorf("re-INVITE: %w", err))
		}
		if ended, err := u.hold(ctx, d); ended || err != nil {
			return finish(err)
		}
	}
	return finish(nil)
}

// holdTime is Config.Hold, at least MinRTPHold with RTP on.
func (u *UAC) holdTime() time.Duration {
	if u.cfg.RTP {
		return max(u.cfg.Hold, MinRTPHold)
	}
	return u.cfg.Hold
}

// hold waits Config.Hold; ended is true when the far end hung up meanwhile.
func (u *UAC) hold(ctx context.Context, d *Dialog) (ended bool, err error) {
	hold := u.holdTime()
	if hold <= 0 {
		select {
		case <-d.RemoteBye():
			return true, nil
		default:
			return false, ctx.Err()
		}
	}
	t := time.NewTimer(hold)
	defer t.Stop()
	select {
	case <-t.C:
		return false, nil
	case <-d.RemoteBye():
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// finish records a hang-up by the far end, or sends our BYE.
func (u *UAC) finish(ctx context.Context, r *CallResult, d *Dialog, cause error) CallResult {
	select {
	case <-d.RemoteBye():
		r.RemoteBye = true
		u.removeDialog(d)
		return *r
	default:
	}
	if cause != nil && r.Err == "" {
		r.Err = cause.Error()
	}
	status, err := u.hangup(ctx, d)
	r.ByeStatus = status
	if err == ErrRemoteBye {
		r.RemoteBye = true
		return *r
	}
	if r.Err == "" {
		if err != nil {
			r.Err = "BYE: " + err.Error()
		} else if !is2xx(status) {
			r.Err = fmt.Sprintf("BYE answered %d", status)
		}
	}
	return *r
}

// hangup sends BYE; once ctx is done it still tries, within the cleanup
// budget, so the far end is not left with a dangling call.
func (u *UAC) hangup(ctx context.Context, d *Dialog) (int, error) {
	if ctx.Err() != nil {
		c, cancel := context.WithTimeout(u.closeCtx, u.cleanupTimeout())
		defer cancel()
		ctx = c
	}
	res, err := d.Bye(ctx)
	if res != nil {
		return res.StatusCode, err
	}
	return 0, err
}
