package sip

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
)

// A branch is one client transaction we opened for a server transaction:
// the request forwarded to one node (or to a carrier). It relays responses
// upstream, implements the timers sipgo leaves to us (the failover timer
// and Timer C), forwards a CANCEL once that is allowed, and when abandoned
// hands its client transaction to a reaper that makes sure the far end
// ends up with no half call.
type branch struct {
	p      *Proxy
	in     *sip.Request
	tx     sip.ServerTransaction
	out    *sip.Request
	clTx   sip.ClientTransaction
	node   *dispatcher.Node // nil when the target is not a node
	upDest string           // where responses to in go

	gotProvisional bool // any 1xx, 100 included: CANCEL is allowed (§9.1)
	gotRinging     bool // an 18x: the call belongs to this branch

	// dir is where the request came from (metrics.FromCarrier/FromNode).
	dir int
	// setupFrom is when the INVITE of a new call arrived (zero otherwise):
	// the first 18x or 2xx relayed observes the call setup time.
	setupFrom time.Time
	// final is the status of the final response relayed upstream (0: none).
	final int
	// hideContact: answers go to a carrier and topology hiding is on.
	hideContact bool
	// restoreVias are the Vias topology hiding removed from the request;
	// they go back on the answers.
	restoreVias []*sip.ViaHeader

	// won is set once a 2xx was relayed upstream: later 2xx
	// retransmissions are relayed too.
	won atomic.Bool
	// orphanAck is our own ACK for a 2xx that arrived on an abandoned
	// branch; 2xx retransmissions get it again.
	orphanAck atomic.Pointer[sip.Request]
	// ackMu serialises sends of orphanAck: sipgo writes into a request as
	// it sends it (its remote address), and a 2xx retransmission may ask
	// for the ACK while endOrphan is still sending it.
	ackMu sync.Mutex

	// viaBranch is the branch of our Via on an INVITE (empty otherwise):
	// the key under which the branch is in Proxy.liveInvites while it
	// waits for its final response.
	viaBranch string
	// early is the last 18x the transport read for this INVITE, in socket
	// order (Proxy.onWire): see recoverRinging.
	early atomic.Pointer[sip.Response]
}

type outcome int

const (
	// outcomeDone: a final response went upstream (or the caller
	// cancelled); nothing more to try.
	outcomeDone outcome = iota
	// outcomeFailover: this target failed before the call was its; try the
	// next one.
	outcomeFailover
)

// runOpts says how a branch behaves.
type runOpts struct {
	// failover: a timeout or a failover code before any 18x returns
	// outcomeFailover instead of answering upstream.
	failover bool
	// firstTimeout bounds the wait for the first 18x or final (0: none).
	firstTimeout time.Duration
	// ringTimeout is Timer C for INVITE once an 18x arrived (0: none).
	ringTimeout time.Duration
	// cancelled fires when the caller CANCELled the INVITE.
	cancelled <-chan struct{}
	// nodeDown fires when health declares the branch's node down (a
	// crashed or hung FreeSWITCH): with failover, a call still ringing
	// there moves to the next candidate instead of waiting for Timer C.
	nodeDown <-chan struct{}
	// onFinal is called with every final response before it goes upstream.
	onFinal func(res *sip.Response)
}

// start opens the client transaction. An error means nothing was sent.
func (b *branch) start() error {
	ctx := context.Background()
	if b.out.Transport() != "UDP" {
		// The context bounds only connection setup (the TCP/TLS dial).
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, b.p.cfg.InviteTimeout)
		defer cancel()
	}
	if b.out.IsInvite() {
		// Registered before anything is sent: the 18x may come back
		// before TransactionRequest returns.
		b.viaBranch = topBranch(b.out)
		b.p.liveInvites.Store(b.viaBranch, b)
	}
	clTx, err := b.p.cl.TransactionRequest(ctx, b.out, noBuild)
	if err != nil {
		b.unregister()
		return err
	}
	b.clTx = clTx
	if b.out.IsInvite() {
		clTx.OnRetransmission(b.onRetransmission)
	}
	return nil
}

// onRetransmission gets 2xx retransmissions of an INVITE after the first
// (sipgo does not put them on Responses()).
func (b *branch) onRetransmission(res *sip.Response) {
	if !res.IsSuccess() {
		return
	}
	if b.won.Load() {
		if err := b.p.srv.WriteResponse(upstreamResponse(res, b.upDest)); err != nil {
			b.p.debug("relay 2xx retransmission failed", zap.Error(err))
		}
		return
	}
	if ack := b.orphanAck.Load(); ack != nil {
		b.ackMu.Lock()
		_ = b.p.cl.WriteRequest(ack, noBuild)
		b.ackMu.Unlock()
	}
}

func (b *branch) unregister() {
	if b.viaBranch != "" {
		b.p.liveInvites.Delete(b.viaBranch)
	}
}

// recoverRinging relays an 18x that sipgo lost behind the final response
// just received, if there was one. sipgo handles every message it
// reads in a goroutine of its own, so an 18x and the 2xx that follows it
// within a millisecond (an auto-answering node, a loaded balancer) can reach
// the client transaction in reverse order; the transaction is then past
// Proceeding and drops the 18x: the caller would never hear ringing, and a
// failover code after ringing would be taken for an unanswered call. The
// transport's own handler (onWire) sees messages in socket order and kept
// the 18x for us; relaying it before the final restores the order the node
// sent.
func (b *branch) recoverRinging() {
	if b.gotRinging || b.viaBranch == "" {
		return
	}
	r := b.early.Load()
	if r == nil {
		return
	}
	b.ringing()
	b.p.metrics.RingingRecovered()
	b.relay(r)
}

// ringing records the branch's first 18x: the call is this node's now
// (no failover), and passive health hears that the node answered.
func (b *branch) ringing() {
	b.gotProvisional, b.gotRinging = true, true
	if b.node != nil && b.p.passv != nil {
		b.p.passv.InviteAnswered(b.node.ID())
	}
}

// relay sends res (from the branch) upstream on the server transaction.
func (b *branch) relay(res *sip.Response) {
	if !b.setupFrom.IsZero() && (res.StatusCode >= 180 && res.StatusCode < 300) {
		b.p.metrics.CallSetup(time.Since(b.setupFrom))
		b.setupFrom = time.Time{}
	}
	if res.StatusCode >= 200 {
		b.final = res.StatusCode
	}
	b.p.metrics.Response(b.in.Method, res.StatusCode, b.dir)
	up := upstreamResponse(res, b.upDest, b.restoreVias...)
	if b.hideContact {
		b.p.hideContact(up, b.in.Transport())
	}
	if res.StatusCode == 503 {
		// §16.7 step 6: a 503 from downstream must not make the previous
		// hop believe this proxy is overloaded.
		up = withStatus(up, 500, "Server Internal Error")
	}
	if err := b.tx.Respond(up); err != nil {
		b.p.debug("relay response failed", zap.Int("code", res.StatusCode), zap.Error(err))
	}
}

// run drives the branch until a final response went upstream, the caller
// cancelled, or (with failover) the target failed.
func (b *branch) run(o runOpts) (outcome, string) {
	var first <-chan time.Time
	var firstTimer *time.Timer
	if o.firstTimeout > 0 {
		firstTimer = time.NewTimer(o.firstTimeout)
		defer firstTimer.Stop()
		first = firstTimer.C
	}
	var ring <-chan time.Time
	var ringTimer *time.Timer
	defer func() {
		if ringTimer != nil {
			ringTimer.Stop()
		}
	}()
	defer b.unregister()
	txDone := b.tx.Done()
	for {
		select {
		case res := <-b.clTx.Responses():
			code := res.StatusCode
			if code >= 200 {
				b.recoverRinging()
			}
			if code < 200 {
				b.gotProvisional = true
				if code == 100 {
					// Hop by hop: we sent our own.
					continue
				}
				if !b.gotRinging {
					b.ringing()
					first = nil
				}
				if o.ringTimeout > 0 {
					if ringTimer == nil {
						ringTimer = time.NewTimer(o.ringTimeout)
						ring = ringTimer.C
					} else {
						ringTimer.Reset(o.ringTimeout)
					}
				}
				b.relay(res)
				continue
			}
			if o.failover && !b.gotRinging && b.p.failoverCodes[code] {
				// Not answered: the non-2xx was ACKed by sipgo.
				return outcomeFailover, "code_" + statusClassLabel(code)
			}
			if b.node != nil && b.p.passv != nil && !b.gotRinging {
				b.p.passv.InviteAnswered(b.node.ID())
			}
			if o.onFinal != nil {
				o.onFinal(res)
			}
			if res.IsSuccess() && b.out.IsInvite() {
				b.won.Store(true)
				b.p.untrackInvite(b.in)
			}
			b.relay(res)
			return outcomeDone, ""

		case <-b.clTx.Done():
			// The client transaction ended without a final response:
			// Timer B/F or a transport error.
			err := b.clTx.Err()
			reason := "timeout"
			if errors.Is(err, sip.ErrTransactionTransport) {
				reason = "transport"
			}
			if o.failover && !b.gotRinging {
				return outcomeFailover, reason
			}
			if reason == "transport" {
				b.p.respond(b.in, b.tx, 503, "Service Unavailable", b.p.retryAfter)
			} else {
				b.p.respond(b.in, b.tx, 408, "Request Timeout")
			}
			return outcomeDone, ""

		case <-first:
			// No 18x or final in time.
			if !o.failover {
				continue
			}
			b.abandon()
			return outcomeFailover, "timeout"

		case <-ring:
			// Timer C: ringing too long. CANCEL it and tell the caller.
			b.abandon()
			b.p.respond(b.in, b.tx, 408, "Request Timeout")
			return outcomeDone, ""

		case <-o.cancelled:
			// The caller CANCELled; sipgo already answered 200 and 487.
			b.abandon()
			return outcomeDone, ""

		case <-o.nodeDown:
			if !o.failover {
				o.nodeDown = nil
				continue
			}
			// Not answered yet (a 2xx would have ended the loop): the
			// caller hears ringing from the next node instead.
			b.abandon()
			return outcomeFailover, "node_down"

		case <-txDone:
			// The server transaction ended under us (connection closed).
			b.abandon()
			return outcomeDone, ""
		}
	}
}

// abandon gives up the branch: CANCEL it if allowed (now or at its first
// provisional), and make sure a 2xx that still arrives is ACKed and ended
// with a BYE. Non-INVITE branches are simply left to their timers.
func (b *branch) abandon() {
	if !b.out.IsInvite() {
		b.p.bg(b.drainNonInvite)
		return
	}
	b.p.bg(b.reap)
}

func (b *branch) drainNonInvite() {
	for {
		select {
		case <-b.clTx.Responses():
		case <-b.clTx.Done():
			return
		}
	}
}

// reap owns an abandoned INVITE client transaction until it ends.
func (b *branch) reap() {
	cancelSent := false
	if b.gotProvisional {
		b.p.sendCancel(b.out, b.node)
		cancelSent = true
	}
	// Bound: a node that answers nothing at all is given up after Timer B;
	// one that rings forever after a CANCEL is given up after 64*T1 more.
	limit := time.NewTimer(sip.Timer_B)
	defer limit.Stop()
	for {
		select {
		case res := <-b.clTx.Responses():
			switch {
			case res.StatusCode < 200:
				if !cancelSent {
					b.p.sendCancel(b.out, b.node)
					cancelSent = true
				}
			case res.IsSuccess():
				// The node answered a call nobody wants any more.
				b.p.endOrphan(b, res)
			default:
				// A final non-2xx (487 usually): sipgo ACKed it.
			}
		case <-b.clTx.Done():
			return
		case <-limit.C:
			b.clTx.Terminate()
			return
		}
	}
}

// sendCancel CANCELs the INVITE out (§9.1: same Request-URI, Call-ID, From,
// To, CSeq number and top Via), statefully, and drains the answer.
func (p *Proxy) sendCancel(out *sip.Request, n *dispatcher.Node) {
	c := sip.NewRequest(sip.CANCEL, out.Recipient)
	c.SipVersion = out.SipVersion
	c.AppendHeader(out.Via())
	for _, h := range out.Headers() {
		if _, ok := h.(*sip.RouteHeader); ok {
			c.AppendHeader(h)
		}
	}
	mf := sip.MaxForwardsHeader(defaultMaxForwards)
	c.AppendHeader(&mf)
	c.AppendHeader(out.From())
	c.AppendHeader(out.To())
	c.AppendHeader(out.CallID())
	c.AppendHeader(&sip.CSeqHeader{SeqNo: out.CSeq().SeqNo, MethodName: sip.CANCEL})
	c.AppendHeader(p.serverHdr)
	c.SetBody(nil)
	c.SetTransport(out.Transport())
	c.SetDestination(out.Destination())
	c.Laddr = out.Laddr
	p.bg(func() { p.fireAndDrain(c) })
}

// fireAndDrain sends a request statefully and reads its responses until
// the transaction ends, so that sipgo's FSM is never blocked on them.
func (p *Proxy) fireAndDrain(req *sip.Request) {
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.InviteTimeout)
	clTx, err := p.cl.TransactionRequest(ctx, req, noBuild)
	cancel()
	if err != nil {
		p.debug("send failed", zap.String("method", string(req.Method)), zap.Error(err))
		return
	}
	defer clTx.Terminate()
	limit := time.NewTimer(sip.Timer_F)
	defer limit.Stop()
	for {
		select {
		case res := <-clTx.Responses():
			if res.StatusCode >= 200 {
				return
			}
		case <-clTx.Done():
			return
		case <-limit.C:
			return
		}
	}
}

// endOrphan ACKs a 2xx that arrived on an abandoned branch and sends the
// node a BYE, so that it does not keep a call nobody is in.
func (p *Proxy) endOrphan(b *branch, res *sip.Response) {
	if b.orphanAck.Load() != nil {
		return
	}
	out := b.out
	target := out.Recipient
	if c := res.Contact(); c != nil {
		target = c.Address
	}
	mk := func(m sip.RequestMethod, seq uint32) *sip.Request {
		r := sip.NewRequest(m, target)
		r.AppendHeader(&sip.ViaHeader{
			ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: out.Transport(),
			Host: out.Via().Host, Port: out.Via().Port,
			Params: sip.HeaderParams{{K: "branch", V: sip.GenerateBranch()}, {K: "rport"}},
		})
		mf := sip.MaxForwardsHeader(defaultMaxForwards)
		r.AppendHeader(&mf)
		r.AppendHeader(out.From())
		r.AppendHeader(res.To())
		r.AppendHeader(out.CallID())
		r.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: m})
		r.AppendHeader(p.serverHdr)
		r.SetBody(nil)
		r.SetTransport(out.Transport())
		r.SetDestination(out.Destination())
		r.Laddr = out.Laddr
		return r
	}
	ack := mk(sip.ACK, out.CSeq().SeqNo)
	if !b.orphanAck.CompareAndSwap(nil, ack) {
		return
	}
	b.ackMu.Lock()
	err := p.cl.WriteRequest(ack, noBuild)
	b.ackMu.Unlock()
	if err != nil {
		p.debug("orphan ACK failed", zap.Error(err))
	}
	bye := mk(sip.BYE, out.CSeq().SeqNo+1)
	p.log.Info("ending call answered after it was abandoned",
		zap.String("call_id", string(*out.CallID())), zap.String("node", nodeID(b.node)))
	p.bg(func() { p.fireAndDrain(bye) })
}

func nodeID(n *dispatcher.Node) string {
	if n == nil {
		return ""
	}
	return n.ID()
}

// statusClassLabel gives bounded labels for reasons: the code itself for
// the common failover codes, else its class.
func statusClassLabel(code int) string {
	switch code {
	case 408, 480, 486, 500, 502, 503, 504:
		return itoa3(code)
	}
	return string(rune('0'+code/100)) + "xx"
}

func itoa3(c int) string {
	return string([]byte{byte('0' + c/100), byte('0' + c/10%10), byte('0' + c%10)})
}

// cancelSignal turns sipgo's OnCancel callback (called with the FSM lock
// held: it must not block) into a channel.
func cancelSignal(tx sip.ServerTransaction) <-chan struct{} {
	ch := make(chan struct{})
	var once sync.Once
	if !tx.OnCancel(func(*sip.Request) { once.Do(func() { close(ch) }) }) {
		// Already cancelled (or terminated) before we registered.
		if errors.Is(tx.Err(), sip.ErrTransactionCanceled) {
			once.Do(func() { close(ch) })
		}
	}
	return ch
}
