package sip

import (
	"context"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/metrics"
	"github.com/sipbalancer/sipbalancer/pkg/session"
)

// maxCandidates bounds failover attempts per call (and the stack array the
// dispatcher fills).
const maxCandidates = 16

// createsDialog reports whether a request method creates a dialog and must
// therefore be record-routed and bound.
func createsDialog(m sip.RequestMethod) bool {
	return m == sip.INVITE || m == sip.SUBSCRIBE || m == sip.REFER
}

// newCall handles an out-of-dialog request from a carrier: a new call
// (INVITE) or another request for the pool (MESSAGE, SUBSCRIBE...). The
// node is chosen by the dispatcher and failed over serially.
func (p *Proxy) newCall(req *sip.Request, tx sip.ServerTransaction, mf uint32) {
	isInvite := req.IsInvite()
	arrived := time.Now()
	if isInvite && p.draining.Load() {
		p.reject(req, tx, p.drainingRejection())
		return
	}
	if isInvite && p.Overloaded() {
		p.reject(req, tx, &rejection{code: 503, reason: "Service Unavailable", label: "overload", hdrs: []sip.Header{p.retryAfter}})
		return
	}
	var cancelled <-chan struct{}
	if isInvite {
		// At once, so that the carrier stops retransmitting while we pick.
		p.respond(req, tx, 100, "Trying")
		cancelled = cancelSignal(tx)
	}

	var buf [maxCandidates]*dispatcher.Node
	n := min(p.cfg.MaxAttempts, maxCandidates)
	cands := p.disp.Pick(p.hashKey(req), buf[:0:n])
	callID := string(*req.CallID())
	if len(cands) == 0 {
		p.log.Warn("no node available for new call", zap.String("call_id", callID))
		p.metrics.AllUnavailable()
		if isInvite {
			p.metrics.CallOutcome(metrics.OutcomeFailed)
		}
		p.respond(req, tx, 503, "Service Unavailable", p.retryAfter)
		return
	}

	fromTag := tagOf(req.From().Params)
	upDest := responseDest(req)
	prevVia := receivedVia(req)
	r := p.route(req) // a preloaded Route to us is removed
	dialog := createsDialog(req.Method)

	for attempt, node := range cands {
		if cancelled != nil {
			select {
			case <-cancelled:
				p.releaseAsync(callID)
				return
			default:
			}
		}
		dest, transport := p.nodeTarget(node)
		spec := outSpec{
			via:        newVia(p.listenerFor(transport), transport, p.br.branch(req, string(req.Method), attempt)),
			prevVia:    prevVia,
			dropRoutes: r.ours,
			maxFwd:     mf,
			transport:  transport,
			dest:       dest,
			laddr:      p.laddrFor(transport),
		}
		if dialog {
			token := p.signer.Sign(session.Token{NodeID: node.ID()}, callID, fromTag)
			spec.rr = p.recordRoute(req.Transport(), transport, token)
			p.bindAsync(session.Binding{CallID: callID, NodeID: node.ID(), Attempt: attempt,
				Via: p.listenerFor(transport).viaSentBy})
		}
		b := &branch{p: p, in: req, tx: tx, out: buildRequest(req, &spec), node: node, upDest: upDest, dir: metrics.FromCarrier,
			hideContact: p.cfg.HideTopology}
		if isInvite {
			b.setupFrom = arrived
		}
		if err := b.start(); err != nil {
			p.nodeFailed(node, "transport", callID, err)
			continue
		}
		p.metrics.Dispatched(node.ID())
		p.debug("request forwarded to node", zap.String("method", string(req.Method)),
			zap.String("node", node.ID()), zap.String("call_id", callID), zap.Int("attempt", attempt))
		node.AddInflight(1)
		opts := runOpts{
			failover:     true,
			firstTimeout: p.cfg.InviteTimeout,
			cancelled:    cancelled,
			nodeDown:     p.downSignal(node.ID()),
		}
		if isInvite {
			opts.ringTimeout = p.cfg.RingTimeout
		}
		if dialog {
			nodeID := node.ID()
			opts.onFinal = func(res *sip.Response) {
				if res.IsSuccess() {
					p.confirmAsync(callID, nodeID)
				} else {
					p.releaseAsync(callID)
				}
			}
		}
		oc, reason := b.run(opts)
		node.AddInflight(-1)
		if oc == outcomeDone {
			wasCancelled := false
			if cancelled != nil {
				select {
				case <-cancelled:
					wasCancelled = true
				default:
				}
			}
			if wasCancelled && dialog && !b.won.Load() {
				p.releaseAsync(callID)
			}
			if isInvite {
				switch {
				case b.won.Load():
					p.metrics.CallOutcome(metrics.OutcomeAnswered)
				case wasCancelled:
					p.metrics.CallOutcome(metrics.OutcomeCancelled)
				case b.final >= 300:
					p.metrics.CallOutcome(metrics.OutcomeRejected)
				default:
					p.metrics.CallOutcome(metrics.OutcomeFailed)
				}
			}
			return
		}
		p.nodeFailed(node, reason, callID, nil)
	}
	p.log.Warn("all candidates failed", zap.String("call_id", callID), zap.Int("tried", len(cands)))
	p.metrics.AllUnavailable()
	if isInvite {
		p.metrics.CallOutcome(metrics.OutcomeFailed)
	}
	if dialog {
		p.releaseAsync(callID)
	}
	p.respond(req, tx, 503, "Service Unavailable", p.retryAfter)
}

// nodeFailed records a passive failure of node for a new call.
func (p *Proxy) nodeFailed(n *dispatcher.Node, reason, callID string, err error) {
	p.metrics.FailedOver(n.ID(), reason)
	if p.passv != nil {
		p.passv.InviteFailed(n.ID(), reason)
	}
	if ce := p.log.Check(zap.InfoLevel, "failing over"); ce != nil {
		ce.Write(zap.String("node", n.ID()), zap.String("reason", reason),
			zap.String("call_id", callID), zap.Error(err))
	}
}

// hashKey is the dispatcher key of a request: the configured header's value
// or the Call-ID.
func (p *Proxy) hashKey(req *sip.Request) dispatcher.Key {
	if p.cfg.HashHeader != "" {
		if h := req.GetHeader(p.cfg.HashHeader); h != nil {
			return dispatcher.KeyFromString(h.Value())
		}
	}
	return dispatcher.KeyFromString(string(*req.CallID()))
}

// The affinity store's writes never block forwarding (the Store contract:
// the memory store is immediate, the Redis store queues), so they need no
// deadline of their own. Errors are the store's to count.
func (p *Proxy) bindAsync(b session.Binding) {
	if err := p.store.Bind(context.Background(), b, p.cfg.EarlyTTL); err != nil {
		p.debug("affinity bind failed", zap.String("call_id", b.CallID), zap.Error(err))
	}
}

func (p *Proxy) confirmAsync(callID, nodeID string) {
	if err := p.store.Confirm(context.Background(), callID, nodeID, p.cfg.DialogTTL); err != nil {
		p.debug("affinity confirm failed", zap.String("call_id", callID), zap.Error(err))
	}
}

func (p *Proxy) touchAsync(callID string) {
	_ = p.store.Touch(context.Background(), callID, p.cfg.DialogTTL)
}

func (p *Proxy) releaseAsync(callID string) {
	_ = p.store.Release(context.Background(), callID, p.cfg.ReleaseLinger)
}

func (p *Proxy) drainingRejection() *rejection {
	return &rejection{code: 503, reason: "Service Unavailable", label: "draining", hdrs: []sip.Header{p.retryAfter}}
}
