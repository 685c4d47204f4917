package fsemu

import (
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// registerHandlers wires the SIP methods to the node.
func (n *Node) registerHandlers() {
	s := n.srv
	s.OnInvite(n.handler(n.onInvite))
	// ACKs are acted on in observe, in arrival order; the handler only keeps
	// them from the 405 fallback.
	s.OnAck(n.handler(func(*sip.Request, sip.ServerTransaction) {}))
	s.OnBye(n.handler(n.onBye))
	s.OnCancel(n.handler(n.onCancel))
	s.OnOptions(n.handler(n.onOptions))
	for _, m := range []sip.RequestMethod{sip.INFO, sip.UPDATE, sip.PRACK, sip.NOTIFY, sip.MESSAGE, sip.REFER} {
		s.OnRequest(m, n.handler(n.onInDialog))
	}
	s.OnNoRoute(n.handler(n.onUnsupported))
}

// handler wraps h so that it does not run once Close has begun and Close
// waits for it.
func (n *Node) handler(h sipgo.RequestHandler) sipgo.RequestHandler {
	return func(req *sip.Request, tx sip.ServerTransaction) {
		if !n.enter() {
			return
		}
		defer n.leave()
		h(req, tx)
	}
}

// reply sends res on tx, logging a failure.
func (n *Node) reply(tx sip.ServerTransaction, res *sip.Response) {
	if err := tx.Respond(res); err != nil {
		n.log.Debug("sending response failed", "status", res.StatusCode, "call_id", callIDOf(res), "error", err)
	}
}

// noDialog answers 481 to a request that matches no dialog.
func (n *Node) noDialog(req *sip.Request, tx sip.ServerTransaction) {
	n.counters.noDialog.Add(1)
	n.reply(tx, n.response(req, 481, reasonNoDialog))
}

// onInvite handles initial INVITEs; re-INVITEs (To tag) go to onReInvite.
func (n *Node) onInvite(req *sip.Request, tx sip.ServerTransaction) {
	if hasToTag(req) {
		n.onReInvite(req, tx)
		return
	}
	callID := callIDOf(req)
	if callID == "" || req.From() == nil || req.To() == nil || req.CSeq() == nil {
		n.reply(tx, n.response(req, 400, "Bad Request"))
		return
	}
	c, evicted := n.calls.getOrCreate(callID, func() *call { return n.newCall(callID, req) })
	if evicted != nil {
		n.evict(evicted)
	}
	branch, _ := req.Via().Params.Get("branch")
	cseq := req.CSeq().SeqNo

	c.mu.Lock()
	switch {
	case c.phase == phaseNew:
		// The first INVITE for this Call-ID: ours.
	case c.phase == phaseDropped:
		// DropRatio: stay silent for the retransmissions too.
		c.mu.Unlock()
		return
	case branch == c.inviteBranch && cseq == c.inviteCSeq:
		// A retransmission whose transaction has ended (its handler is
		// gone, as on TCP): repeat a 2xx still waiting for its ACK.
		var res *sip.Response
		if p := c.pending; p != nil && p.initial {
			res = p.res
		}
		c.mu.Unlock()
		if res != nil {
			n.reply(tx, res)
		}
		return
	case cseq > c.inviteCSeq && c.phase == phaseEnded && !c.rec.Answered:
		// The caller tries again with the same Call-ID after a failure.
		c.resetLocked()
	default:
		// Same Call-ID and CSeq over another branch: a merged request
		// (RFC 3261 8.2.2.2).
		c.mu.Unlock()
		n.reply(tx, n.response(req, 482, "Loop Detected"))
		return
	}
	c.phase = phaseSetup
	c.inviteBranch, c.inviteCSeq = branch, cseq
	c.rec.FromTag, _ = req.From().Params.Get("tag")
	c.rec.ToTag = newTag()
	c.rec.Source = req.Source()
	c.rec.Transport = req.Transport()
	tag := c.rec.ToTag
	c.mu.Unlock()

	n.counters.invites.Add(1)
	n.runInvite(c, req, tx, tag)
}

// resetLocked readies a finished, unanswered call for a new attempt.
func (c *call) resetLocked() {
	c.phase = phaseNew
	c.ended = make(chan struct{})
	c.rec.Status = 0
	c.rec.Cancelled = false
	c.rec.Ended = false
	c.rec.EndReason = ""
}

// runInvite takes a claimed new call through admission, 100, 180 and 200,
// on the handler's goroutine, which therefore lives while the call rings.
func (n *Node) runInvite(c *call, req *sip.Request, tx sip.ServerTransaction, tag string) {
	fail503, drop := n.adm.faults()
	if n.adm.roll(drop) {
		c.mu.Lock()
		c.phase = phaseDropped
		c.rec.ToTag = "" // nothing was ever sent with it
		c.mu.Unlock()
		n.counters.dropped.Add(1)
		n.log.Debug("INVITE dropped", "call_id", c.id)
		return
	}

	// Every response to the INVITE but 100 carries our tag.
	inv := req.Clone()
	inv.To().Params.Add("tag", tag)

	admitted := n.adm.admit()
	if admitted && n.adm.roll(fail503) {
		n.adm.release()
		admitted = false
	}
	if !admitted {
		// FreeSWITCH's gate: 503 straight away, no 100 Trying.
		c.mu.Lock()
		c.rec.Status = 503
		c.endLocked(EndRejected)
		c.mu.Unlock()
		n.counters.rejected503.Add(1)
		n.reply(tx, n.response(inv, 503, reasonMaxCalls))
		return
	}

	c.mu.Lock()
	c.phase = phaseRinging
	c.admitted = true
	n.channelCreatedLocked(c, req)
	c.local = sip.ToHeader{DisplayName: inv.To().DisplayName, Address: *inv.To().Address.Clone(), Params: inv.To().Params.Clone()}
	from := req.From()
	c.remote = sip.FromHeader{DisplayName: from.DisplayName, Address: *from.Address.Clone(), Params: from.Params.Clone()}
	c.remoteTarget = remoteTarget(req)
	c.routeSet = recordRoutes(req)
	c.transport = req.Transport()
	c.remoteCSeq = req.CSeq().SeqNo
	c.localCSeq = uint32(rand.IntN(30000)) + 1
	c.rtpPort = n.nextRTPPort()
	c.echo = req.Recipient.User == n.cfg.EchoUser
	c.offer = nil
	if hasSDP(req) {
		c.offer = req.Body()
	}
	c.sdpSession = uint64(time.Now().Unix())
	c.sdpVersion = c.sdpSession
	ended := c.ended
	c.mu.Unlock()

	// CANCEL is answered by sipgo itself (200, then 487 to the INVITE);
	// the callback runs under the transaction's lock before the 487 goes.
	if !tx.OnCancel(func(*sip.Request) { n.cancelled(c) }) {
		if errors.Is(tx.Err(), sip.ErrTransactionCanceled) {
			n.cancelled(c)
		} else {
			n.failed(c)
		}
		return
	}

	if !n.respondInvite(c, tx, inv, n.response(req, 100, "Trying")) {
		return
	}
	if !n.wait(ended, loadDuration(&n.adm.ringDelay)) || !c.is(phaseRinging) {
		n.abortRinging(c, tx, inv)
		return
	}
	if !n.respondInvite(c, tx, inv, n.dialogResponse(inv, 180, "Ringing", nil)) {
		return
	}
	if !n.wait(ended, loadDuration(&n.adm.answerDelay)) {
		n.abortRinging(c, tx, inv)
		return
	}
	n.answer(c, tx, inv)
}

// answer sends the 200 OK and starts waiting for its ACK. A call with
// media gets its RTP socket first, so the SDP answer names a port that is
// read from the moment the 200 leaves.
func (n *Node) answer(c *call, tx sip.ServerTransaction, inv *sip.Request) {
	m := n.mediaFor(c)
	c.mu.Lock()
	if c.phase != phaseRinging {
		c.mu.Unlock()
		m.close()
		n.abortRinging(c, tx, inv)
		return
	}
	if m != nil {
		c.media = m
		c.rtpPort = m.port
	}
	c.phase = phaseAnswering
	c.sdpVersion++
	ok := n.dialogResponse(inv, 200, "OK", n.sdpAnswer(c.sdpSession, c.sdpVersion, c.rtpPort))
	// pending is in place before the 200 leaves, so an ACK that overtakes
	// the rest of this function still finds it.
	p := &pendingAnswer{res: ok, cseq: c.inviteCSeq, initial: true, conn: retransmitConn(tx, c.transport), acked: make(chan struct{})}
	c.pending = p
	c.rec.Answered = true
	c.rec.Status = 200
	if c.ch != nil {
		c.ch.answered = time.Now()
	}
	c.mu.Unlock()
	n.counters.answered.Add(1)

	err := tx.Respond(ok)

	c.mu.Lock()
	if err != nil {
		c.rec.Answered = false
		if c.pending == p {
			c.clearPendingLocked()
		}
		c.mu.Unlock()
		n.counters.answered.Add(-1)
		if errors.Is(err, sip.ErrTransactionCanceled) {
			// The CANCEL took the transaction first; cancelled has run.
			n.restore487(tx, inv)
		} else {
			n.log.Warn("sending 200 OK failed", "call_id", c.id, "error", err)
			n.failed(c)
		}
		return
	}
	if c.pending == p {
		if c.phase == phaseAnswering {
			c.phase = phaseAnswered
		}
		c.armLocked(p)
	}
	tone := m != nil && !m.echo && c.phase != phaseEnded
	c.mu.Unlock()
	if tone {
		n.goTracked(m.playTone)
	}
}

// mediaFor opens the RTP socket of a call that has media (an echo call, or
// any call with Config.RTP). A socket that cannot be bound leaves the call
// without media, answered all the same: what FreeSWITCH out of RTP ports
// looks like from outside.
func (n *Node) mediaFor(c *call) *media {
	c.mu.Lock()
	want := c.echo || n.cfg.RTP
	echo, offer := c.echo, c.offer
	c.mu.Unlock()
	if !want {
		return nil
	}
	m, err := n.openMedia(c.id, echo, offer)
	if err != nil {
		n.log.Warn("no RTP socket for the call", "call_id", c.id, "error", err)
		return nil
	}
	return m
}

// respondInvite sends a provisional response to the INVITE. It reports
// false when the call cannot go on.
//
// sipgo's server transaction has a trap here: a CANCEL moves it to
// Completed with a 487, but a later Respond still replaces the response it
// keeps for retransmissions (an INVITE retransmission or Timer G would then
// resend our 180 or 200 after the 487). Respond reports that case as
// ErrTransactionCanceled, and restore487 puts a 487 back.
func (n *Node) respondInvite(c *call, tx sip.ServerTransaction, inv *sip.Request, res *sip.Response) bool {
	err := tx.Respond(res)
	switch {
	case err == nil:
		return true
	case errors.Is(err, sip.ErrTransactionCanceled):
		n.restore487(tx, inv)
	default:
		n.log.Warn("sending response failed", "status", res.StatusCode, "call_id", c.id, "error", err)
		n.failed(c)
	}
	return false
}

// restore487 makes a cancelled INVITE transaction keep a 487 as its last
// response (see respondInvite).
func (n *Node) restore487(tx sip.ServerTransaction, inv *sip.Request) {
	_ = tx.Respond(n.response(inv, 487, "Request Terminated"))
}

// abortRinging ends the INVITE of a call that stopped ringing: after a
// CANCEL sipgo has sent 487 already; after an early-dialog BYE (or an
// eviction) we send it; when the node closes we send nothing.
func (n *Node) abortRinging(c *call, tx sip.ServerTransaction, inv *sip.Request) {
	if n.ctx.Err() != nil {
		return
	}
	c.mu.Lock()
	reason := c.rec.EndReason
	if reason != EndCancel {
		c.rec.Status = 487
	}
	c.mu.Unlock()
	if reason == EndCancel {
		return
	}
	if err := tx.Respond(n.response(inv, 487, "Request Terminated")); err != nil && !errors.Is(err, sip.ErrTransactionCanceled) {
		n.log.Debug("sending 487 failed", "call_id", c.id, "error", err)
	}
}

// cancelled is the INVITE transaction's CANCEL callback. It runs under the
// transaction's lock, so it must not call the transaction.
func (n *Node) cancelled(c *call) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.phase != phaseRinging && c.phase != phaseAnswering {
		return
	}
	c.rec.Cancelled = true
	c.rec.Status = 487
	c.endLocked(EndCancel)
	n.counters.cancelled.Add(1)
}

// failed ends a call whose INVITE transaction broke (transport error).
func (n *Node) failed(c *call) {
	c.mu.Lock()
	c.endLocked(EndError)
	c.mu.Unlock()
}

// wait sleeps d unless the call ends or the node closes first; it reports
// whether the call may go on.
func (n *Node) wait(ended <-chan struct{}, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-ended:
			return false
		case <-n.ctx.Done():
			return false
		default:
			return true
		}
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ended:
		return false
	case <-n.ctx.Done():
		return false
	}
}

func (c *call) is(p phase) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.phase == p
}

// ackLocked acts on an ACK for this Call-ID. It is called from observe, in
// arrival order, so an ACK sent just before a re-INVITE or BYE is always
// seen first, as FreeSWITCH's single SIP thread would. ACKs get no response.
func (c *call) ackLocked(req *sip.Request) {
	if !c.rec.Answered || !c.matchLocked(req) || req.CSeq() == nil {
		return
	}
	c.n.counters.acks.Add(1)
	p := c.pending
	if p == nil || req.CSeq().SeqNo != p.cseq {
		return
	}
	c.clearPendingLocked()
	if p.initial && (c.phase == phaseAnswering || c.phase == phaseAnswered) {
		c.confirmLocked()
	}
}

// onReInvite answers an INVITE inside a dialog with 200 OK and a new SDP
// version, and retransmits that 200 until its ACK like the first one.
func (n *Node) onReInvite(req *sip.Request, tx sip.ServerTransaction) {
	c := n.calls.get(callIDOf(req))
	if c == nil || req.CSeq() == nil {
		n.noDialog(req, tx)
		return
	}
	c.mu.Lock()
	if !c.matchLocked(req) || !c.phase.inDialog() {
		c.mu.Unlock()
		n.noDialog(req, tx)
		return
	}
	cseq := req.CSeq().SeqNo
	switch {
	case c.phase == phaseRinging || c.phase == phaseAnswering || c.pending != nil:
		// An offer is still open (early dialog, or a 2xx not yet ACKed).
		c.mu.Unlock()
		n.reply(tx, n.response(req, 491, "Request Pending"))
		return
	case cseq <= c.remoteCSeq:
		c.mu.Unlock()
		n.reply(tx, n.response(req, 500, "Server Internal Error"))
		return
	}
	c.remoteCSeq = cseq
	if ct := req.Contact(); ct != nil {
		c.remoteTarget = *ct.Address.Clone() // target refresh, RFC 3261 12.2.2
	}
	c.mediaOfferLocked(req)
	c.sdpVersion++
	res := n.dialogResponse(req, 200, "OK", n.sdpAnswer(c.sdpSession, c.sdpVersion, c.rtpPort))
	p := &pendingAnswer{res: res, cseq: cseq, conn: retransmitConn(tx, req.Transport()), acked: make(chan struct{})}
	c.pending = p
	c.mu.Unlock()
	n.counters.reInvites.Add(1)

	err := tx.Respond(res)
	c.mu.Lock()
	if c.pending == p {
		if err != nil {
			c.clearPendingLocked()
		} else {
			c.armLocked(p)
		}
	}
	c.mu.Unlock()
	if err != nil {
		n.log.Debug("sending 200 to re-INVITE failed", "call_id", c.id, "error", err)
	}
}

// onBye ends a call on the caller's BYE. In an early dialog the ringing
// INVITE then gets 487 (RFC 3261 15.1.2).
func (n *Node) onBye(req *sip.Request, tx sip.ServerTransaction) {
	c := n.calls.get(callIDOf(req))
	if c == nil {
		n.noDialog(req, tx)
		return
	}
	c.mu.Lock()
	ok := c.matchLocked(req)
	switch {
	case !ok:
	case c.phase.inDialog():
		c.rec.Ended = true
		c.endLocked(EndCallerBye)
	case c.phase == phaseEnded && c.rec.Ended:
		// Already torn down (BYEs crossed, or a repeat): still 200.
	default:
		ok = false
	}
	c.mu.Unlock()
	if !ok {
		n.noDialog(req, tx)
		return
	}
	n.counters.byesReceived.Add(1)
	n.reply(tx, n.response(req, 200, "OK"))
}

// onCancel sees only CANCELs that matched no INVITE transaction (sipgo
// handles the others).
func (n *Node) onCancel(req *sip.Request, tx sip.ServerTransaction) {
	if c := n.calls.get(callIDOf(req)); c != nil && c.is(phaseDropped) {
		return // the node ignores this call altogether
	}
	n.noDialog(req, tx)
}

// onOptions answers OPTIONS pings like mod_sofia: 200, or 503 when paused
// or full unless OptionsAlways200.
func (n *Node) onOptions(req *sip.Request, tx sip.ServerTransaction) {
	n.counters.options.Add(1)
	if hasToTag(req) {
		n.onInDialog(req, tx)
		return
	}
	if !n.adm.optionsAlways200.Load() && n.adm.busy() {
		n.reply(tx, n.response(req, 503, reasonMaxCalls))
		return
	}
	n.reply(tx, n.optionsResponse(req))
}

func (n *Node) optionsResponse(req *sip.Request) *sip.Response {
	res := n.response(req, 200, "OK")
	res.AppendHeader(n.contact(req.Transport(), ""))
	res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	return res
}

// onInDialog answers the other in-dialog requests (INFO, UPDATE, PRACK,
// NOTIFY, MESSAGE, REFER, OPTIONS) of a live dialog, early or confirmed.
func (n *Node) onInDialog(req *sip.Request, tx sip.ServerTransaction) {
	c := n.calls.get(callIDOf(req))
	if c == nil || !hasToTag(req) || req.CSeq() == nil {
		n.noDialog(req, tx)
		return
	}
	c.mu.Lock()
	if !c.matchLocked(req) || !c.phase.inDialog() {
		c.mu.Unlock()
		n.noDialog(req, tx)
		return
	}
	cseq := req.CSeq().SeqNo
	if cseq < c.remoteCSeq {
		c.mu.Unlock()
		n.reply(tx, n.response(req, 500, "Server Internal Error"))
		return
	}
	c.remoteCSeq = cseq
	var res *sip.Response
	switch req.Method {
	case sip.UPDATE:
		n.counters.updates.Add(1)
		var sdp []byte
		if hasSDP(req) {
			c.mediaOfferLocked(req)
			c.sdpVersion++
			sdp = n.sdpAnswer(c.sdpSession, c.sdpVersion, c.rtpPort)
		}
		res = n.dialogResponse(req, 200, "OK", sdp)
	case sip.INFO:
		n.counters.infos.Add(1)
		res = n.response(req, 200, "OK")
	case sip.OPTIONS:
		res = n.optionsResponse(req)
	case sip.REFER:
		res = n.response(req, 202, "Accepted")
	default:
		res = n.response(req, 200, "OK")
	}
	c.mu.Unlock()
	n.reply(tx, res)
}

// onUnsupported answers methods the emulator does not serve.
func (n *Node) onUnsupported(req *sip.Request, tx sip.ServerTransaction) {
	n.reply(tx, n.response(req, 405, "Method Not Allowed"))
}

func hasSDP(req *sip.Request) bool {
	ct := req.ContentType()
	return len(req.Body()) > 0 && ct != nil && strings.HasPrefix(strings.ToLower(ct.Value()), "application/sdp")
}

// retransmitConn is where 2xx retransmissions are written: the UDP
// listener the request came in on. Reliable transports get none.
func retransmitConn(tx sip.ServerTransaction, transport string) sip.Connection {
	if sip.IsReliable(transport) {
		return nil
	}
	if stx, ok := tx.(*sip.ServerTx); ok {
		return stx.Connection()
	}
	return nil
}

// remoteTarget is the caller's Contact URI, or its source address when the
// INVITE has none.
func remoteTarget(req *sip.Request) sip.Uri {
	if ct := req.Contact(); ct != nil {
		return *ct.Address.Clone()
	}
	host, port, _ := net.SplitHostPort(req.Source())
	p, _ := strconv.Atoi(port)
	return sip.Uri{Scheme: "sip", Host: host, Port: p}
}

// recordRoutes returns the INVITE's Record-Route URIs, top first: a UAS's
// route set (RFC 3261 12.1.1).
func recordRoutes(req *sip.Request) []sip.Uri {
	var out []sip.Uri
	for _, h := range req.GetHeaders("Record-Route") {
		switch rr := h.(type) {
		case *sip.RecordRouteHeader:
			out = append(out, *rr.Address.Clone())
		default:
			var u sip.Uri
			var params sip.HeaderParams
			if _, err := sip.ParseAddressValue(h.Value(), &u, &params); err == nil {
				out = append(out, u)
			}
		}
	}
	return out
}
