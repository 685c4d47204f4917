package callgen

import (
	"time"

	"github.com/emiago/sipgo/sip"
)

// allowHeader lists what the UAC answers; sent on 405 and OPTIONS.
const allowHeader = "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, NOTIFY, MESSAGE"

// registerHandlers wires requests arriving at our listeners (from the far
// end, through the proxy) to the dialogs.
func (u *UAC) registerHandlers() {
	s := u.server
	s.OnBye(u.handleBye)
	s.OnAck(u.handleAck)
	s.OnCancel(u.handleCancel)
	s.OnInvite(u.handleInDialog)
	s.OnUpdate(u.handleInDialog)
	s.OnOptions(u.handleInDialog)
	s.OnInfo(u.handleInDialog)
	s.OnNotify(u.handleInDialog)
	s.OnMessage(u.handleInDialog)
	s.OnNoRoute(u.handleInDialog)
}

func (u *UAC) respond(req *sip.Request, tx sip.ServerTransaction, code int, reason string, body []byte, hdrs ...sip.Header) {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if body != nil {
		ct := sip.ContentTypeHeader("application/sdp")
		res.AppendHeader(&ct)
		res.SetBody(body)
	}
	if err := tx.Respond(res); err != nil {
		u.log.Warn("callgen: respond failed", "method", req.Method, "status", code, "error", err)
	}
}

// matchDialog finds the dialog of an in-dialog request from the far end:
// same Call-ID, To tag ours, From tag theirs.
func (u *UAC) matchDialog(req *sip.Request) *Dialog {
	if req.CallID() == nil {
		return nil
	}
	d := u.lookupDialog(req.CallID().Value())
	if d == nil || toTag(req.To()) != d.localTag || fromTag(req.From()) != d.remoteTag {
		return nil
	}
	return d
}

func (u *UAC) handleBye(req *sip.Request, tx sip.ServerTransaction) {
	d := u.matchDialog(req)
	if d == nil {
		u.respond(req, tx, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil)
		return
	}
	// The call is over for us before the far end can learn it from the 200.
	d.markRemoteBye()
	u.removeDialog(d)
	u.respond(req, tx, sip.StatusOK, "OK", nil)
}

func (u *UAC) handleAck(req *sip.Request, _ sip.ServerTransaction) {
	if d := u.matchDialog(req); d != nil && req.CSeq() != nil {
		d.ackReceived(req.CSeq().SeqNo)
	}
}

// handleCancel sees only CANCELs that match no server transaction (sipgo
// answers the others itself).
func (u *UAC) handleCancel(req *sip.Request, tx sip.ServerTransaction) {
	u.respond(req, tx, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil)
}

// handleInDialog answers the far end's requests: 200 inside a known dialog
// (re-INVITE and UPDATE with our SDP and Contact), 481 for an unknown one,
// 200 for an out-of-dialog OPTIONS (a keepalive), and refuses new calls.
func (u *UAC) handleInDialog(req *sip.Request, tx sip.ServerTransaction) {
	allow := sip.NewHeader("Allow", allowHeader)
	if toTag(req.To()) == "" {
		switch req.Method {
		case sip.OPTIONS:
			u.respond(req, tx, sip.StatusOK, "OK", nil, allow)
		case sip.INVITE:
			u.respond(req, tx, 403, "Forbidden (call generator takes no calls)", nil)
		default:
			u.respond(req, tx, 405, "Method Not Allowed", nil, allow)
		}
		return
	}
	d := u.matchDialog(req)
	if d == nil {
		u.respond(req, tx, sip.StatusCallTransactionDoesNotExists, "Call/Transaction Does Not Exist", nil)
		return
	}
	seq := req.CSeq().SeqNo
	if !d.checkRemoteSeq(seq) {
		u.respond(req, tx, 500, "Server Internal Error (CSeq out of order)", nil)
		return
	}
	switch req.Method {
	case sip.INVITE:
		d.setTarget(req.Contact())
		u.answerReInvite(d, req, tx, seq)
	case sip.UPDATE:
		d.setTarget(req.Contact())
		var body []byte
		if len(req.Body()) > 0 {
			body = d.offer()
		}
		u.respond(req, tx, sip.StatusOK, "OK", body, u.contact.Clone())
	case sip.OPTIONS:
		u.respond(req, tx, sip.StatusOK, "OK", nil, allow)
	case sip.INFO, sip.NOTIFY, sip.MESSAGE:
		u.respond(req, tx, sip.StatusOK, "OK", nil)
	default:
		u.respond(req, tx, 405, "Method Not Allowed", nil, allow)
	}
}

// answerReInvite answers 200 with SDP and, as the UAS core must (13.3.1.4),
// re-sends it at T1, 2*T1, ... up to T2 until the ACK arrives, for at most
// 64*T1.
func (u *UAC) answerReInvite(d *Dialog, req *sip.Request, tx sip.ServerTransaction, seq uint32) {
	acked := d.expectAck(seq)
	defer d.forgetAck(seq)
	res := sip.NewResponseFromRequest(req, sip.StatusOK, "OK", nil)
	res.AppendHeader(u.contact.Clone())
	ct := sip.ContentTypeHeader("application/sdp")
	res.AppendHeader(&ct)
	res.SetBody(d.offer())
	if err := tx.Respond(res); err != nil {
		u.log.Warn("callgen: answer re-INVITE failed", "call_id", d.callID, "error", err)
		return
	}
	interval := sip.T1
	retransmit := time.NewTimer(interval)
	defer retransmit.Stop()
	deadline := time.NewTimer(64 * sip.T1)
	defer deadline.Stop()
	for {
		select {
		case <-acked:
			return
		case <-retransmit.C:
			if err := tx.Respond(res); err != nil {
				return
			}
			interval = min(2*interval, sip.T2)
			retransmit.Reset(interval)
		case <-deadline.C:
			u.log.Warn("callgen: no ACK for 2xx to re-INVITE", "call_id", d.callID)
			return
		case <-tx.Done():
			return
		case <-u.closeCtx.Done():
			return
		}
	}
}
