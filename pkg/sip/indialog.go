package sip

import (
	"errors"
	"net"
	"runtime/debug"
	"strconv"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/metrics"
	"github.com/sipbalancer/sipbalancer/pkg/session"
)

// dialogTarget is where an in-dialog request goes.
type dialogTarget struct {
	node      *dispatcher.Node // owning node
	toNode    bool             // true: deliver to node; false: to the carrier side
	dest      string
	transport string
	recipient *sip.Uri // strict routing only
	dropLast  bool
	viaToken  bool // the owner came from the token, not the store
}

var (
	errNoDialog  = errors.New("no route for dialog")
	errForbidden = errors.New("request toward a carrier from a source that is not a node")
)

// resolveDialog finds the owning node and the direction of an in-dialog
// request: from our Route token when there is one (no state needed), else
// from the affinity store by Call-ID.
func (p *Proxy) resolveDialog(req *sip.Request, r *routing) (dialogTarget, error) {
	var t dialogTarget
	if r.hasToken {
		t.node = p.disp.Node(r.token.NodeID)
		// A call from a carrier travels toward the node in its original
		// direction; a call the node originated, the other way round.
		t.toNode = r.sameDir != r.token.Outbound
		t.viaToken = t.node != nil
	}
	src := p.sourceNode(req)
	if t.node == nil {
		ctx, cancel := storeCtx()
		b, err := p.store.Lookup(ctx, string(*req.CallID()))
		cancel()
		if err != nil {
			return t, errNoDialog
		}
		t.node = p.disp.Node(b.NodeID)
		if t.node == nil {
			return t, errNoDialog
		}
		t.toNode = src == nil
	}
	if t.toNode {
		if p.rehome != nil && t.node.State() == dispatcher.StateDown {
			if n := p.rehomeCall(req, t.node); n != nil {
				t.node = n
			}
		}
		t.dest, t.transport = p.nodeTarget(t.node)
		if r.strict && r.strictNext != nil {
			t.recipient, t.dropLast = r.strictNext, true
		}
		if p.cfg.HideTopology {
			if u := p.unhideTarget(req, t.dest, t.transport); u != nil {
				t.recipient = u
			}
		}
		return t, nil
	}
	// Toward the carrier: only a node may send that way, or the balancer
	// would relay anything anyone sends it.
	if src == nil {
		return t, errForbidden
	}
	switch {
	case r.next != nil:
		t.dest, t.transport = uriTarget(r.next)
	case r.strict && r.strictNext != nil:
		t.recipient, t.dropLast = r.strictNext, true
		t.dest, t.transport = uriTarget(r.strictNext)
	default:
		t.dest, t.transport = uriTarget(&req.Recipient)
	}
	return t, nil
}

// inDialog forwards a request inside a dialog (To tag present) statefully,
// with no failover: the dialog lives on its node.
func (p *Proxy) inDialog(req *sip.Request, tx sip.ServerTransaction, mf uint32) {
	r := p.route(req)
	t, err := p.resolveDialog(req, &r)
	if err != nil {
		p.dialogError(req, tx, err)
		return
	}
	callID := string(*req.CallID())
	spec := outSpec{
		via:        newVia(p.listenerFor(t.transport), t.transport, p.br.branch(req, string(req.Method), 0)),
		prevVia:    receivedVia(req),
		dropRoutes: r.ours,
		dropLast:   t.dropLast,
		recipient:  t.recipient,
		maxFwd:     mf,
		transport:  t.transport,
		dest:       t.dest,
		laddr:      p.laddrFor(t.transport),
	}
	hide := p.cfg.HideTopology && !t.toNode
	if hide {
		spec.hideVias, spec.prevVia = true, nil
	}
	b := &branch{p: p, in: req, tx: tx, out: buildRequest(req, &spec), upDest: responseDest(req), dir: metrics.FromNode}
	if t.toNode {
		b.node = t.node
		b.dir = metrics.FromCarrier
		b.hideContact = p.cfg.HideTopology
	}
	if hide {
		b.restoreVias = inboundVias(req)
		p.hideContact(b.out, t.transport)
	}
	if err := b.start(); err != nil {
		p.debug("in-dialog forward failed", zap.String("call_id", callID), zap.Error(err))
		p.respond(req, tx, 503, "Service Unavailable", p.retryAfter)
		return
	}
	opts := runOpts{}
	switch req.Method {
	case sip.INVITE:
		opts.ringTimeout = p.cfg.RingTimeout
		opts.cancelled = cancelSignal(tx)
		opts.onFinal = func(res *sip.Response) {
			if res.IsSuccess() {
				p.touchAsync(callID)
			}
		}
	case sip.BYE:
		opts.onFinal = func(*sip.Response) { p.releaseAsync(callID) }
	default:
		p.touchAsync(callID)
	}
	b.run(opts)
}

func (p *Proxy) dialogError(req *sip.Request, tx sip.ServerTransaction, err error) {
	switch {
	case errors.Is(err, errForbidden):
		p.reject(req, tx, &rejection{code: 403, reason: "Forbidden", label: "not_a_node"})
	default:
		p.reject(req, tx, &rejection{code: 481, reason: "Call/Transaction Does Not Exist", label: "no_dialog"})
	}
}

// onWire sees every message sipgo's transports read, synchronously and in
// arrival order, before any per-message goroutine runs our handlers. ACKs
// for 2xx are forwarded here: an ACK is the one request a UA sends without
// waiting for an answer, usually right before its next request (a
// re-INVITE, a BYE). Forwarded from a goroutine of its own it could be
// overtaken by that request, and a node that sees a re-INVITE before the
// ACK of the previous INVITE answers 491. Here it leaves before the next
// message of its connection is even parsed.
//
// An ACK for a non-2xx final belongs to the INVITE's server transaction
// (same branch), which absorbs it: those are recognised by their branch and
// left alone.
func (p *Proxy) onWire(msg sip.Message) {
	req, ok := msg.(*sip.Request)
	if !ok {
		if res, ok := msg.(*sip.Response); ok {
			p.noteRinging(res)
		}
		return
	}
	if req.Method != sip.ACK {
		return
	}
	if !p.admit(req, nil) {
		return
	}
	if p.metrics != nil {
		dir := metrics.FromCarrier
		if p.sourceNode(req) != nil {
			dir = metrics.FromNode
		}
		p.metrics.Request(sip.ACK, dir)
	}
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic forwarding ACK", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	if b := topBranch(req); b != "" {
		if _, pending := p.inviteBranches.Load(b); pending {
			return
		}
	}
	p.forwardAck(req)
}

// noteRinging gives an 18x to the INVITE branch it answers, in the order
// the transport read it (see branch.recoverRinging). It runs in the
// transport's reader: a map lookup, nothing else.
func (p *Proxy) noteRinging(res *sip.Response) {
	if res.StatusCode <= 100 || res.StatusCode >= 200 {
		return
	}
	if c := res.CSeq(); c == nil || c.MethodName != sip.INVITE {
		return
	}
	v := res.Via()
	if v == nil {
		return
	}
	id, _ := v.Params.Get("branch")
	if b, ok := p.liveInvites.Load(id); ok {
		b.(*branch).early.Store(res)
	}
}

// trackInvite remembers the branch of an INVITE server transaction until
// it ends, so that onWire leaves its non-2xx ACK to it. A 2xx answer
// untracks it at once (untrackInvite): the ACK of a 2xx is end to end, and
// an old (RFC 2543) UA may send it on the INVITE's branch.
func (p *Proxy) trackInvite(req *sip.Request, tx sip.ServerTransaction) {
	b := topBranch(req)
	if b == "" {
		return
	}
	p.inviteBranches.Store(b, struct{}{})
	if !tx.OnTerminate(func(string, error) { p.inviteBranches.Delete(b) }) {
		p.inviteBranches.Delete(b)
	}
}

func (p *Proxy) untrackInvite(req *sip.Request) {
	if b := topBranch(req); b != "" {
		p.inviteBranches.Delete(b)
	}
}

func topBranch(req *sip.Request) string {
	if v := req.Via(); v != nil {
		b, _ := v.Params.Get("branch")
		return b
	}
	return ""
}

// forwardAck forwards an ACK for a 2xx statelessly, end to end (the branch
// is derived from the inbound one, so a retransmitted ACK gets the same,
// §16.11). It runs in the transport's reader: an ACK whose owner the token
// gives is sent at once; one that needs the affinity store (no usable
// token, or a node to re-home) is handed to a goroutine, because a store
// read must never stall the reader.
func (p *Proxy) forwardAck(req *sip.Request) {
	mf, rej := checkRequest(req)
	if rej != nil || tagOf(req.To().Params) == "" {
		return
	}
	if p.looped(req) {
		return
	}
	r := p.route(req)
	if r.hasToken {
		if n := p.disp.Node(r.token.NodeID); n != nil && (p.rehome == nil || n.State() != dispatcher.StateDown) {
			p.sendAck(req, &r, mf)
			return
		}
	}
	p.bg(func() { p.sendAck(req, &r, mf) })
}

func (p *Proxy) sendAck(req *sip.Request, r *routing, mf uint32) {
	t, err := p.resolveDialog(req, r)
	if err != nil {
		p.debug("ACK dropped", zap.String("call_id", string(*req.CallID())), zap.Error(err))
		return
	}
	spec := outSpec{
		via:        newVia(p.listenerFor(t.transport), t.transport, p.br.branch(req, "ACK", 0)),
		prevVia:    receivedVia(req),
		dropRoutes: r.ours,
		dropLast:   t.dropLast,
		recipient:  t.recipient,
		maxFwd:     mf,
		transport:  t.transport,
		dest:       t.dest,
		laddr:      p.laddrFor(t.transport),
	}
	if p.cfg.HideTopology && !t.toNode {
		spec.hideVias, spec.prevVia = true, nil
	}
	out := buildRequest(req, &spec)
	if p.cfg.HideTopology && !t.toNode {
		p.hideContact(out, t.transport)
	}
	if err := p.cl.WriteRequest(out, noBuild); err != nil {
		p.debug("ACK forward failed", zap.String("call_id", string(*req.CallID())), zap.Error(err))
	}
}

// handleCancel gets the CANCELs sipgo could not match to a server
// transaction of ours: their INVITE was forwarded by another instance, or
// its transaction is gone. The store names the node and the attempt; the
// branch of that attempt's INVITE is derived as its forwarder did, and the
// CANCEL is forwarded statelessly (§16.10). The node's 200 comes back as a
// stray response and is relayed.
func (p *Proxy) handleCancel(req *sip.Request, tx sip.ServerTransaction) {
	mf, rej := checkRequest(req)
	if rej != nil {
		p.reject(req, tx, rej)
		return
	}
	ctx, cancel := storeCtx()
	b, err := p.store.Lookup(ctx, string(*req.CallID()))
	cancel()
	var node *dispatcher.Node
	if err == nil && b.State == session.Early && !b.Outbound {
		node = p.disp.Node(b.NodeID)
	}
	if node == nil {
		p.reject(req, tx, &rejection{code: 481, reason: "Call/Transaction Does Not Exist", label: "no_transaction"})
		return
	}
	r := p.route(req)
	dest, transport := p.nodeTarget(node)
	via := newVia(p.listenerFor(transport), transport, p.br.branch(req, "INVITE", b.Attempt))
	if host, port, err := net.SplitHostPort(b.Via); err == nil {
		// The node matches a CANCEL to its INVITE by branch and sent-by
		// (§17.2.3): use the sent-by of the instance that forwarded the
		// INVITE. Its answers go to that instance, which relays them.
		if n, err := strconv.Atoi(port); err == nil {
			via.Host, via.Port = host, n
		}
	}
	spec := outSpec{
		via:        via,
		prevVia:    receivedVia(req),
		dropRoutes: r.ours,
		maxFwd:     mf,
		transport:  transport,
		dest:       dest,
		laddr:      p.laddrFor(transport),
	}
	if err := p.cl.WriteRequest(buildRequest(req, &spec), noBuild); err != nil {
		p.debug("CANCEL forward failed", zap.Error(err))
		p.respond(req, tx, 503, "Service Unavailable", p.retryAfter)
	}
}

// rehomeCall finds the new owner of a call whose node is down: the one
// another instance already chose (the store says), or one the dispatcher
// picks now and the store accepts atomically (the first instance to decide
// wins; every instance follows). It returns nil to keep the old node.
func (p *Proxy) rehomeCall(req *sip.Request, from *dispatcher.Node) *dispatcher.Node {
	callID := string(*req.CallID())
	ctx, cancel := storeCtx()
	defer cancel()
	if b, err := p.store.Lookup(ctx, callID); err == nil && b.NodeID != from.ID() {
		if n := p.disp.Node(b.NodeID); n != nil {
			return n
		}
	}
	var buf [1]*dispatcher.Node
	cands := p.disp.Pick(dispatcher.KeyFromString(callID), buf[:0:1])
	if len(cands) == 0 {
		return nil
	}
	owner, err := p.rehome.Rehome(ctx, callID, from.ID(), cands[0].ID())
	if err != nil {
		p.debug("re-homing failed", zap.String("call_id", callID), zap.Error(err))
		return nil
	}
	n := p.disp.Node(owner)
	if n != nil && n != from {
		if ce := p.log.Check(zap.InfoLevel, "call re-homed"); ce != nil {
			ce.Write(zap.String("call_id", callID), zap.String("from", from.ID()), zap.String("to", owner))
		}
	}
	return n
}
