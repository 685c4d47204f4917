package app

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/sipbalancer/sipbalancer/pkg/health"
	"github.com/sipbalancer/sipbalancer/pkg/metrics"
)

// Version is the build's version, set by cmd/sipbalancer.
var Version = "dev"

// newRegistry builds the metrics registry: Go and process collectors, the
// call-path recorder, and scrape-time views of nodes, store and proxy.
func (a *App) newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.rec = metrics.NewRecorder(reg)
	metrics.RegisterNodes(reg, a.nodeViews)
	metrics.RegisterStore(reg, a.storeView)
	metrics.RegisterProxy(reg, Version, func() metrics.ProxyView {
		return metrics.ProxyView{
			InFlight:        a.proxy.InFlight(),
			Draining:        a.proxy.Draining(),
			Listeners:       len(a.proxy.Listeners()),
			Overloaded:      a.proxy.Overloaded(),
			SchedLatencyP99: a.proxy.SchedLatencyP99(),
		}
	})
	return reg
}

// Registry is the instance's metrics registry (served on /metrics).
func (a *App) Registry() *prometheus.Registry { return a.reg }

// nodeViews lists the configured nodes, then the nodes a reload removed
// while they still carry calls (state draining), so that a dashboard shows
// those calls ending rather than a node vanishing with calls on it.
func (a *App) nodeViews() []metrics.NodeView {
	snap := a.disp.Snapshot()
	// Nodes' capacity is its length: the append copies.
	nodes := append(snap.Nodes(), snap.RetiredWithCalls()...)
	out := make([]metrics.NodeView, 0, len(nodes))
	for _, n := range nodes {
		v := metrics.NodeView{
			ID:       n.ID(),
			State:    n.State().String(),
			Active:   n.Active(),
			Inflight: n.Inflight(),
			Weight:   n.Spec.Weight,
		}
		if l := n.Load(); l != nil {
			v.HasLoad = true
			v.Sessions, v.MaxSessions, v.IdleCPU = l.Sessions, l.MaxSessions, l.IdleCPU
		}
		if st, ok := a.checker.NodeStatus(n.ID()); ok {
			if v.HasLoad && st.LoadAge >= 0 {
				v.LoadAge = st.LoadAge
			}
			if st.ProbeStatus != 0 {
				v.HasProbe = true
				v.ProbeRTT = st.ProbeRTT
			}
			if st.ESL != nil {
				v.ESL = true
				v.ESLConnected = st.ESL.Connected
			}
			if m := st.Media; m != nil {
				v.MediaProbes = m.Probes
				v.HasMedia = m.Measured
				v.MediaLoss, v.MediaReceived, v.MediaJitter, v.MediaRTT = m.Loss, m.Received, m.Jitter, m.RTT
			}
		}
		out = append(out, v)
	}
	return out
}

func (a *App) storeView() metrics.StoreView {
	if a.redis == nil {
		return metrics.StoreView{Kind: "memory", Healthy: true, Dialogs: a.memory.Len()}
	}
	st := a.redis.Stats()
	return metrics.StoreView{
		Kind:         "redis",
		Healthy:      a.redis.Healthy(),
		QueueDepth:   st.QueueDepth,
		Backlog:      st.Backlog,
		Written:      st.Written,
		Dropped:      st.Dropped,
		Evicted:      st.Evicted,
		Errors:       st.Errors,
		Lookups:      st.Lookups,
		LookupErrors: st.LookupErrors,
		LookupBounds: st.LookupLatency.Bounds,
		LookupCounts: st.LookupLatency.Counts,
		LookupCount:  st.LookupLatency.Count,
		LookupSum:    st.LookupLatency.Sum,
	}
}

func (a *App) recordStateChange(ch health.Change) {
	a.rec.StateChange(ch.Node, ch.To.String(), ch.Reason)
}
