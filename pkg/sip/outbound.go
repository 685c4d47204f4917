package sip

import (
	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/metrics"
	"github.com/sipbalancer/sipbalancer/pkg/session"
)

// fromNode handles an out-of-dialog request from a node: the balancer as
// the node's outbound proxy. Our Route entries are removed and the request
// goes to the next Route or the Request-URI (the carrier), record-routed
// with a token naming the originating node so that the dialog keeps flowing
// through the balancer and its requests find their way back to that node.
func (p *Proxy) fromNode(req *sip.Request, tx sip.ServerTransaction, mf uint32, src *dispatcher.Node) {
	if req.IsInvite() && p.draining.Load() {
		p.reject(req, tx, p.drainingRejection())
		return
	}
	r := p.route(req)
	var target *sip.Uri
	switch {
	case r.next != nil:
		target = r.next
	case r.strict && r.strictNext != nil:
		target = r.strictNext
	default:
		target = &req.Recipient
	}
	secure := target.Scheme == "sips"
	if target == &req.Recipient && p.self.has(target.Host, target.Port, secure) {
		// Addressed to the balancer itself, nothing beyond.
		if req.Method == sip.OPTIONS {
			p.answerOptions(req, tx)
			return
		}
		p.reject(req, tx, &rejection{code: 404, reason: "Not Found", label: "no_route"})
		return
	}
	callID := string(*req.CallID())
	dest, transport := uriTarget(target)
	spec := outSpec{
		via:        newVia(p.listenerFor(transport), transport, p.br.branch(req, string(req.Method), 0)),
		prevVia:    receivedVia(req),
		dropRoutes: r.ours,
		maxFwd:     mf,
		transport:  transport,
		dest:       dest,
		laddr:      p.laddrFor(transport),
	}
	if r.strict && r.strictNext != nil {
		spec.recipient, spec.dropLast = r.strictNext, true
	}
	if p.cfg.HideTopology {
		spec.hideVias, spec.prevVia = true, nil
	}
	dialog := createsDialog(req.Method)
	if dialog {
		token := p.signer.Sign(session.Token{NodeID: src.ID(), Outbound: true}, callID, tagOf(req.From().Params))
		spec.rr = p.recordRoute(req.Transport(), transport, token)
		p.bindAsync(session.Binding{CallID: callID, NodeID: src.ID(), Outbound: true})
	}
	var cancelled <-chan struct{}
	if req.IsInvite() {
		p.respond(req, tx, 100, "Trying")
		cancelled = cancelSignal(tx)
	}
	b := &branch{p: p, in: req, tx: tx, out: buildRequest(req, &spec), upDest: responseDest(req), dir: metrics.FromNode}
	if p.cfg.HideTopology {
		b.restoreVias = inboundVias(req)
		p.hideContact(b.out, transport)
	}
	if err := b.start(); err != nil {
		p.debug("outbound forward failed", zap.String("call_id", callID), zap.String("dest", dest), zap.Error(err))
		if dialog {
			p.releaseAsync(callID)
		}
		p.respond(req, tx, 503, "Service Unavailable", p.retryAfter)
		return
	}
	opts := runOpts{cancelled: cancelled}
	if req.IsInvite() {
		opts.ringTimeout = p.cfg.RingTimeout
	}
	if dialog {
		nodeID := src.ID()
		opts.onFinal = func(res *sip.Response) {
			if res.IsSuccess() {
				p.confirmAsync(callID, nodeID)
			} else {
				p.releaseAsync(callID)
			}
		}
	}
	b.run(opts)
}
