package callgen

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/emiago/sipgo/sip"
)

// InviteOption adjusts one initial INVITE.
type InviteOption func(*inviteOptions)

type inviteOptions struct {
	headers     []sip.Header
	maxForwards int // <0: 70
	requestURI  string
	bodySet     bool
	contentType string
	body        []byte
	cancelTo    string
	mediaPort   int // the call's own RTP port (Config.RTP)
}

// WithHeader adds a header to the INVITE (after Config.Headers).
func WithHeader(h sip.Header) InviteOption {
	return func(o *inviteOptions) { o.headers = append(o.headers, h) }
}

// WithMaxForwards sets Max-Forwards (default 70; 0 is allowed, to test 483).
func WithMaxForwards(n int) InviteOption {
	return func(o *inviteOptions) { o.maxForwards = max(n, 0) }
}

// WithRequestURI sets the Request-URI (and the To URI) instead of
// Config.RequestURI.
func WithRequestURI(uri string) InviteOption {
	return func(o *inviteOptions) { o.requestURI = uri }
}

// WithBody replaces the SDP offer; a nil body sends the INVITE without one.
func WithBody(contentType string, body []byte) InviteOption {
	return func(o *inviteOptions) { o.bodySet, o.contentType, o.body = true, contentType, body }
}

// WithCancelTo sends the CANCEL of InviteAndCancel to addr (host:port)
// instead of where the INVITE went: a carrier whose CANCEL reaches another
// instance of the balancer than its INVITE did.
func WithCancelTo(addr string) InviteOption {
	return func(o *inviteOptions) { o.cancelTo = addr }
}

// inviteOutcome is what one INVITE transaction produced.
type inviteOutcome struct {
	final  *sip.Response
	setup  time.Duration // first 18x or 2xx
	answer time.Duration // 2xx
	dialog *Dialog       // initial INVITE answered 2xx
	bye    int           // status of the BYE sent because the 2xx came too late
}

// buildInvite makes an initial INVITE: new Call-ID and From tag, CSeq 1,
// Via with rport, our Contact, an SDP offer; sent to Target.
func (u *UAC) buildInvite(opts []InviteOption) (*sip.Request, error) {
	o := inviteOptions{maxForwards: -1}
	for _, f := range opts {
		f(&o)
	}
	ruri := u.requestURI
	if o.requestURI != "" {
		if err := sip.ParseUri(o.requestURI, &ruri); err != nil {
			return nil, fmt.Errorf("callgen: Request-URI %q: %w", o.requestURI, err)
		}
	}
	for _, h := range o.headers {
		if h == nil {
			return nil, errors.New("callgen: nil header option")
		}
	}

	req := sip.NewRequest(sip.INVITE, ruri)
	req.AppendHeader(u.newVia(u.transport))
	maxFwd := sip.MaxForwardsHeader(70)
	if o.maxForwards >= 0 {
		maxFwd = sip.MaxForwardsHeader(o.maxForwards)
	}
	req.AppendHeader(&maxFwd)
	from := &sip.FromHeader{
		Address: sip.Uri{Scheme: "sip", User: u.cfg.User, Host: u.host},
		Params:  sip.NewParams(),
	}
	from.Params.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: sip.Uri{Scheme: ruri.Scheme, User: ruri.User, Host: ruri.Host, Port: ruri.Port}})
	callID := sip.CallIDHeader(u.newCallID())
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.INVITE})
	req.AppendHeader(u.contact.Clone())
	for _, h := range u.cfg.Headers {
		req.AppendHeader(sip.HeaderClone(h))
	}
	for _, h := range o.headers {
		req.AppendHeader(h)
	}
	port := u.mediaPort
	if o.mediaPort != 0 {
		port = o.mediaPort
	}
	body, ctype := u.sdp(u.seq.Add(1), port), "application/sdp"
	if o.bodySet {
		body, ctype = o.body, o.contentType
	}
	if body != nil && ctype != "" {
		ct := sip.ContentTypeHeader(ctype)
		req.AppendHeader(&ct)
	}
	req.SetBody(body)
	req.SetDestination(u.target)
	u.prepare(req, u.transport)
	return req, nil
}

// buildCancel makes the CANCEL for inv (RFC 3261 9.1): same Request-URI,
// top Via, Route, Call-ID, From, To and CSeq number; sent where inv went.
func (u *UAC) buildCancel(inv *sip.Request) *sip.Request {
	c := sip.NewRequest(sip.CANCEL, inv.Recipient)
	c.AppendHeader(sip.HeaderClone(inv.Via()))
	for _, h := range inv.GetHeaders("Route") {
		c.AppendHeader(sip.HeaderClone(h))
	}
	maxFwd := sip.MaxForwardsHeader(70)
	c.AppendHeader(&maxFwd)
	c.AppendHeader(sip.HeaderClone(inv.From()))
	c.AppendHeader(sip.HeaderClone(inv.To()))
	c.AppendHeader(sip.HeaderClone(inv.CallID()))
	c.AppendHeader(&sip.CSeqHeader{SeqNo: inv.CSeq().SeqNo, MethodName: sip.CANCEL})
	c.SetBody(nil)
	c.SetDestination(inv.Destination())
	u.prepare(c, inv.Transport())
	return c
}

// Invite sends an initial INVITE and waits for its final response, bounded
// by ctx and Config.Timeout (after which a CANCEL is sent if a provisional
// arrived). A 2xx is ACKed and yields the Dialog; a non-2xx final is
// returned with a nil Dialog and a nil error (sipgo ACKs it). The error is
// non-nil when no final response came, or when a 2xx broke the rules
// (no Contact, no To tag): the Dialog is then still returned, ACKed.
func (u *UAC) Invite(ctx context.Context, opts ...InviteOption) (*Dialog, *sip.Response, error) {
	req, err := u.buildInvite(opts)
	if err != nil {
		return nil, nil, err
	}
	out, err := u.runInvite(ctx, req, nil, nil, "")
	return out.dialog, out.final, err
}

// InviteAndCancel sends an INVITE and a CANCEL for it as soon as
// cancelAfter returns true for a provisional response (nil: the first
// provisional, 100 included). It returns the INVITE's final response, 487
// when the CANCEL won. If the call was answered anyway, the 2xx is ACKed,
// the call hung up with BYE, and the 2xx returned.
func (u *UAC) InviteAndCancel(ctx context.Context, cancelAfter func(*sip.Response) bool, opts ...InviteOption) (*sip.Response, error) {
	if cancelAfter == nil {
		cancelAfter = func(*sip.Response) bool { return true }
	}
	req, err := u.buildInvite(opts)
	if err != nil {
		return nil, err
	}
	o := inviteOptions{}
	for _, f := range opts {
		f(&o)
	}
	out, err := u.runInvite(ctx, req, nil, cancelAfter, o.cancelTo)
	return out.final, err
}

// runInvite runs one INVITE client transaction, initial (d == nil) or
// re-INVITE, to its final response. Every wait is bounded: by Timeout and
// ctx until then, and by a short cleanup budget while a CANCEL sent because
// of them is answered.
func (u *UAC) runInvite(ctx context.Context, req *sip.Request, d *Dialog, cancelAfter func(*sip.Response) bool, cancelTo string) (out inviteOutcome, err error) {
	if u.isClosed() {
		return out, ErrClosed
	}
	as := &ackState{seq: req.CSeq().SeqNo}
	start := time.Now()
	tx, err := u.request(ctx, req)
	if err != nil {
		return out, fmt.Errorf("callgen: send INVITE: %w", err)
	}
	// Registered before the first response is read, so no 2xx
	// retransmission can slip past unACKed.
	tx.OnRetransmission(func(r *sip.Response) {
		if r.IsSuccess() {
			as.onRetransmission(u, r)
		}
	})

	guard := time.NewTimer(u.cfg.Timeout)
	defer guard.Stop()
	ctxDone := ctx.Done()

	var (
		provisional bool
		canceled    bool
		gaveUp      error // why we stopped waiting (timeout, ctx); nil while waiting
		cancelTx    sip.ClientTransaction
		cancelRes   <-chan *sip.Response
		cancelDone  <-chan struct{}
	)
	defer func() {
		if cancelTx != nil {
			cancelTx.Terminate()
		}
	}()
	sendCancel := func() {
		canceled = true
		c := u.buildCancel(req)
		if cancelTo != "" {
			c.SetDestination(cancelTo)
		}
		t, err := u.request(u.closeCtx, c)
		if err != nil {
			u.log.Warn("callgen: send CANCEL failed", "call_id", req.CallID().Value(), "error", err)
			return
		}
		cancelTx, cancelRes, cancelDone = t, t.Responses(), t.Done()
	}
	giveUp := func(why error) (stop bool) {
		if gaveUp != nil || canceled {
			// Already canceled (explicitly or by giving up) and still no
			// final response: stop here; the transaction is dropped.
			if gaveUp == nil {
				gaveUp = why
			}
			return true
		}
		gaveUp = why
		ctxDone = nil
		guard.Reset(u.cleanupTimeout())
		if provisional {
			sendCancel()
		}
		// Without a provisional a CANCEL must wait for one (9.1).
		return false
	}

	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				if res.StatusCode > 100 && out.setup == 0 {
					out.setup = time.Since(start)
				}
				provisional = true
				if !canceled && (gaveUp != nil || (cancelAfter != nil && cancelAfter(res))) {
					sendCancel()
				}
				continue
			}
			out.final = res
			if !res.IsSuccess() {
				return out, gaveUp
			}
			if out.setup == 0 {
				out.setup = time.Since(start)
			}
			out.answer = time.Since(start)
			return u.answered(out, req, res, d, as, canceled, gaveUp)

		case res := <-cancelRes:
			if !res.IsProvisional() {
				cancelRes = nil
				if !res.IsSuccess() {
					u.log.Info("callgen: CANCEL refused", "call_id", req.CallID().Value(), "status", res.StatusCode)
				}
			}
		case <-cancelDone:
			cancelRes, cancelDone = nil, nil

		case <-tx.Done():
			err := tx.Err()
			if gaveUp != nil {
				err = errors.Join(gaveUp, err)
			}
			return out, fmt.Errorf("callgen: INVITE got no final response: %w", err)
		case <-guard.C:
			why := gaveUp
			if why == nil {
				why = fmt.Errorf("callgen: no final response to INVITE within %v", u.cfg.Timeout)
			}
			if giveUp(why) {
				tx.Terminate()
				return out, gaveUp
			}
		case <-ctxDone:
			if giveUp(fmt.Errorf("callgen: INVITE abandoned: %w", ctx.Err())) {
				tx.Terminate()
				return out, gaveUp
			}
		}
	}
}

// answered handles the first 2xx of an INVITE transaction.
func (u *UAC) answered(out inviteOutcome, req *sip.Request, res *sip.Response, d *Dialog, as *ackState, canceled bool, gaveUp error) (inviteOutcome, error) {
	if d != nil { // re-INVITE
		if toTag(res.To()) != d.remoteTag {
			u.stray(res)
			return out, fmt.Errorf("callgen: re-INVITE answered %d from another dialog", res.StatusCode)
		}
		d.setTarget(res.Contact()) // a re-INVITE is a target refresh
		if err := as.onSuccess(d, res); err != nil {
			return out, fmt.Errorf("callgen: ACK: %w", err)
		}
		return out, gaveUp
	}

	nd, derr := newDialog(u, res, req.Recipient, u.transport)
	if nd == nil {
		return out, derr
	}
	if ct := req.ContentType(); ct != nil && ct.Value() == "application/sdp" {
		nd.sdp = req.Body()
	}
	// Known before the ACK leaves: the far end may send BYE right after it.
	u.addDialog(nd)
	if err := as.onSuccess(nd, res); err != nil {
		derr = errors.Join(derr, fmt.Errorf("callgen: ACK: %w", err))
	}
	if !canceled && gaveUp == nil {
		out.dialog = nd
		return out, derr
	}
	// Answered although we canceled or gave up: hang up.
	ctx, cancel := context.WithTimeout(u.closeCtx, u.cleanupTimeout())
	defer cancel()
	if bye, _ := nd.Bye(ctx); bye != nil {
		out.bye = bye.StatusCode
	}
	if gaveUp != nil {
		return out, fmt.Errorf("%w (answered %d late, hung up)", gaveUp, res.StatusCode)
	}
	return out, derr
}

// runNonInvite runs a non-INVITE client transaction to its final response.
func (u *UAC) runNonInvite(ctx context.Context, req *sip.Request) (*sip.Response, error) {
	tx, err := u.request(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("callgen: send %s: %w", req.Method, err)
	}
	guard := time.NewTimer(u.cfg.Timeout)
	defer guard.Stop()
	for {
		select {
		case res := <-tx.Responses():
			if res.IsProvisional() {
				continue
			}
			return res, nil
		case <-tx.Done():
			return nil, fmt.Errorf("callgen: %s got no final response: %w", req.Method, tx.Err())
		case <-guard.C:
			tx.Terminate()
			return nil, fmt.Errorf("callgen: no final response to %s within %v", req.Method, u.cfg.Timeout)
		case <-ctx.Done():
			tx.Terminate()
			return nil, fmt.Errorf("callgen: %s abandoned: %w", req.Method, ctx.Err())
		}
	}
}

// request starts a client transaction for a fully built request. ctx (and
// Timeout) bound only the connection setup (DNS, TCP connect).
func (u *UAC) request(ctx context.Context, req *sip.Request) (sip.ClientTransaction, error) {
	ctx, cancel := context.WithTimeout(ctx, u.cfg.Timeout)
	defer cancel()
	return u.client.TransactionRequest(ctx, req, noBuild)
}
