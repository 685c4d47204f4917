package callgen

import (
	"context"
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"
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
// recorded.
func (u *UAC) Call(ctx context.Context) CallResult {
	var r CallResult
	fail := func(err error) CallResult {
		if r.Err == "" && err != nil {
			r.Err = err.Error()
		}
		return r
	}

	req, err := u.buildInvite(nil)
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

	if ended, err := u.hold(ctx, d); ended || err != nil {
		return u.finish(ctx, &r, d, err)
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
			return u.finish(ctx, &r, d, err)
		}
	}
	return u.finish(ctx, &r, d, nil)
}

// hold waits Config.Hold; ended is true when the far end hung up meanwhile.
func (u *UAC) hold(ctx context.Context, d *Dialog) (ended bool, err error) {
	if u.cfg.Hold <= 0 {
		select {
		case <-d.RemoteBye():
			return true, nil
		default:
			return false, ctx.Err()
		}
	}
	t := time.NewTimer(u.cfg.Hold)
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
