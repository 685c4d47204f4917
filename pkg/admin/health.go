package admin

import (
	"io"
	"net/http"
	"time"

	"github.com/sipbalancer/sipbalancer/pkg/session"
)

// healthz says the process is alive and serving HTTP; it checks nothing
// else, so a liveness probe never restarts a balancer that is merely
// draining or whose nodes are down.
func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, "ok\n")
}

// Readiness statuses.
const (
	statusReady    = "ready"     // 200
	statusDegraded = "degraded"  // 200: calls flow, something needs attention
	statusNotReady = "not_ready" // 503
)

// readiness is /readyz's body.
type readiness struct {
	Status string `json:"status"`
	Ready  bool   `json:"ready"`
	// Problems says why the status is not "ready", one line each.
	Problems  []string       `json:"problems"`
	Listeners []string       `json:"listeners"`
	Draining  bool           `json:"draining"`
	Nodes     nodesSummary   `json:"nodes"`
	Store     storeReadiness `json:"store"`
	// VersionMismatch names differing FreeSWITCH versions across the pool.
	VersionMismatch string `json:"version_mismatch,omitempty"`
}

type nodesSummary struct {
	// Available nodes take new calls now (state up, below max_calls).
	Available int `json:"available"`
	Total     int `json:"total"`
	// States counts nodes per state.
	States map[string]int `json:"states"`
}

type storeReadiness struct {
	Kind    string      `json:"kind"`
	Healthy bool        `json:"healthy"`
	Redis   *redisStats `json:"redis,omitempty"`
}

// redisStats is session.RedisStats for JSON.
type redisStats struct {
	Mode            string     `json:"mode"`
	Connected       bool       `json:"connected"`
	LastOK          *time.Time `json:"last_ok"`
	LastError       string     `json:"last_error,omitempty"`
	LastErrorAt     *time.Time `json:"last_error_at,omitempty"`
	QueueDepth      int        `json:"queue_depth"`
	QueueCapacity   int        `json:"queue_capacity"`
	Backlog         int        `json:"backlog"`
	BacklogCapacity int        `json:"backlog_capacity"`
	Pending         int        `json:"pending"`
	Written         uint64     `json:"written"`
	Dropped         uint64     `json:"dropped"`
	Evicted         uint64     `json:"evicted"`
	Rejected        uint64     `json:"rejected"`
	Errors          uint64     `json:"errors"`
	Lookups         uint64     `json:"lookups"`
	LookupErrors    uint64     `json:"lookup_errors"`
	LookupP99Ms     float64    `json:"lookup_p99_ms"`
}

func newRedisStats(st session.RedisStats) *redisStats {
	return &redisStats{
		Mode: st.Mode, Connected: st.Connected,
		LastOK: timePtr(st.LastOK), LastError: st.LastError, LastErrorAt: timePtr(st.LastErrorAt),
		QueueDepth: st.QueueDepth, QueueCapacity: st.QueueCapacity,
		Backlog: st.Backlog, BacklogCapacity: st.BacklogCapacity, Pending: st.Pending,
		Written: st.Written, Dropped: st.Dropped, Evicted: st.Evicted, Rejected: st.Rejected, Errors: st.Errors,
		Lookups: st.Lookups, LookupErrors: st.LookupErrors,
		LookupP99Ms: millis(st.LookupLatency.Quantile(0.99)),
	}
}

// readyz is 200 when the instance should get new calls: a SIP listener is
// bound, it is not draining, and a node can take a call. See the package
// documentation for why an unhealthy Redis is "degraded", not "not_ready".
func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	rd := s.readiness()
	code := http.StatusOK
	if !rd.Ready {
		code = http.StatusServiceUnavailable
	}
	writeJSON(w, code, rd)
}

func (s *Server) readiness() readiness {
	rd := readiness{
		Problems:  []string{},
		Listeners: s.app.Listeners(),
		Draining:  s.app.Draining(),
		Nodes:     nodesSummary{States: map[string]int{}},
	}
	if rd.Listeners == nil {
		rd.Listeners = []string{}
	}
	for _, n := range s.app.Dispatcher().Snapshot().Nodes() {
		rd.Nodes.Total++
		rd.Nodes.States[n.State().String()]++
		if n.Available() {
			rd.Nodes.Available++
		}
	}
	if r := s.app.Redis(); r != nil {
		rd.Store = storeReadiness{Kind: "redis", Healthy: r.Healthy(), Redis: newRedisStats(r.Stats())}
	} else {
		rd.Store = storeReadiness{Kind: "memory", Healthy: true}
	}
	rd.VersionMismatch = s.app.Checker().VersionMismatch()

	if len(rd.Listeners) == 0 {
		rd.Problems = append(rd.Problems, "no SIP listener is bound")
	}
	if rd.Draining {
		rd.Problems = append(rd.Problems, "the instance is draining: new calls are refused")
	}
	if rd.Nodes.Available == 0 {
		rd.Problems = append(rd.Problems, "no node can take a new call")
	}
	rd.Ready = len(rd.Problems) == 0
	switch {
	case !rd.Ready:
		rd.Status = statusNotReady
	case !rd.Store.Healthy:
		rd.Status = statusDegraded
		rd.Problems = append(rd.Problems,
			"affinity store unhealthy (Redis unreachable or its queue filling): calls go on, in-dialog requests route by token")
	default:
		rd.Status = statusReady
	}
	return rd
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func millis(d time.Duration) float64 {
	return float64(d.Microseconds()) / 1000
}
