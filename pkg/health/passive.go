package health

import (
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
)

// Passive counts the failures nodes cause on live traffic and takes a node
// out of rotation when they pile up. It implements the proxy's
// PassiveObserver; its methods are on the call path, so they only touch
// atomics after the first call for a node.
type Passive struct {
	disp     *dispatcher.Dispatcher
	failures int64
	cooldown time.Duration
	log      *zap.Logger

	nodes sync.Map // node ID -> *passiveNode
	// OnChange, if set, is called after Passive changes a node's state.
	OnChange func(nodeID string, from, to dispatcher.State, reason string)
}

type passiveNode struct {
	consecutive atomic.Int64
	// out is true while this tracker holds the node down.
	out atomic.Bool
	mu  sync.Mutex
	t   *time.Timer
}

// NewPassive returns a tracker that takes a node down after failures
// consecutive failures and tries it again after cooldown.
func NewPassive(d *dispatcher.Dispatcher, failures int, cooldown time.Duration, log *zap.Logger) *Passive {
	if failures < 1 {
		failures = 1
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Passive{disp: d, failures: int64(failures), cooldown: cooldown, log: log.Named("health.passive")}
}

func (p *Passive) node(id string) *passiveNode {
	if v, ok := p.nodes.Load(id); ok {
		return v.(*passiveNode)
	}
	v, _ := p.nodes.LoadOrStore(id, &passiveNode{})
	return v.(*passiveNode)
}

// InviteAnswered clears the node's failure count.
func (p *Passive) InviteAnswered(nodeID string) {
	pn := p.node(nodeID)
	if pn.consecutive.Load() != 0 {
		pn.consecutive.Store(0)
	}
}

// InviteFailed counts a failure the node caused.
func (p *Passive) InviteFailed(nodeID, reason string) {
	pn := p.node(nodeID)
	if pn.consecutive.Add(1) < p.failures {
		return
	}
	n := p.disp.Node(nodeID)
	if n == nil || n.State() != dispatcher.StateUp {
		return
	}
	if pn.out.Swap(true) {
		return
	}
	old := n.SetState(dispatcher.StateDown)
	if old != dispatcher.StateUp {
		// Someone else changed it meanwhile: put it back, not ours.
		n.SetState(old)
		pn.out.Store(false)
		return
	}
	p.log.Warn("node out of rotation after passive failures",
		zap.String("node", nodeID), zap.String("reason", reason),
		zap.Int64("consecutive", pn.consecutive.Load()), zap.Duration("retry_in", p.cooldown))
	if p.OnChange != nil {
		p.OnChange(nodeID, dispatcher.StateUp, dispatcher.StateDown, "passive_"+reason)
	}
	pn.mu.Lock()
	if pn.t != nil {
		pn.t.Stop()
	}
	pn.t = time.AfterFunc(p.cooldown, func() { p.retry(nodeID, pn) })
	pn.mu.Unlock()
}

// retry puts a node taken out by passive failures back on trial: it takes
// calls again and a single further failure takes it out again.
func (p *Passive) retry(nodeID string, pn *passiveNode) {
	if !pn.out.Swap(false) {
		return
	}
	n := p.disp.Node(nodeID)
	if n == nil || n.State() != dispatcher.StateDown {
		return
	}
	pn.consecutive.Store(p.failures - 1)
	n.SetState(dispatcher.StateUp)
	p.log.Info("node back on trial after passive cooldown", zap.String("node", nodeID))
	if p.OnChange != nil {
		p.OnChange(nodeID, dispatcher.StateDown, dispatcher.StateUp, "passive_retry")
	}
}

// Stop cancels pending retries.
func (p *Passive) Stop() {
	p.nodes.Range(func(_, v any) bool {
		pn := v.(*passiveNode)
		pn.mu.Lock()
		if pn.t != nil {
			pn.t.Stop()
		}
		pn.mu.Unlock()
		return true
	})
}
