package admin

import (
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/health"
)

// nodeJSON is one node as the API shows it: the configured spec, the
// dispatcher's live state and counters, and what health knows.
type nodeJSON struct {
	ID string `json:"id"`
	// Host is the node's host as configured; SIP the resolved address calls
	// go to.
	Host      string `json:"host"`
	SIP       string `json:"sip"`
	Transport string `json:"transport"`
	Weight    int    `json:"weight"`
	MaxCalls  int    `json:"max_calls"`
	Priority  int    `json:"priority"`
	// State is up, down, full, draining or disabled; Reason why (empty for
	// up); Since when it took this state (null before health has judged).
	State  string     `json:"state"`
	Reason string     `json:"reason"`
	Since  *time.Time `json:"since"`
	// Available: it takes a new call now (state up, below max_calls).
	Available bool `json:"available"`
	// Retired: removed from the configuration by a reload; it drains.
	Retired bool `json:"retired"`
	// Load is the node's Event Socket figures, null when unknown or stale.
	Load *loadJSON `json:"load"`
	// ActiveCalls are the confirmed calls this instance counts on the node;
	// Inflight the INVITEs sent to it without a final answer yet.
	ActiveCalls int64 `json:"active_calls"`
	Inflight    int64 `json:"inflight"`
	// PassiveFailures counts consecutive INVITE failures the node caused.
	PassiveFailures int64      `json:"passive_failures"`
	Probe           *probeJSON `json:"probe"`
	ESL             eslJSON    `json:"esl"`
}

type loadJSON struct {
	Sessions       int64   `json:"sessions"`
	MaxSessions    int64   `json:"max_sessions"`
	IdleCPU        float64 `json:"idle_cpu"` // percent
	SessionsPerSec int64   `json:"sessions_per_sec"`
	AgeSeconds     float64 `json:"age_seconds"`
}

// probeJSON is the last OPTIONS probe.
type probeJSON struct {
	// Status is the answer's code, 0 when none came.
	Status int `json:"status"`
	// Class is alive, full or dead, as health judged the answer.
	Class string    `json:"class,omitempty"`
	RTTMs float64   `json:"rtt_ms"`
	At    time.Time `json:"at"`
	Error string    `json:"error,omitempty"`
}

type eslJSON struct {
	// Configured: the node has nodes[].esl.
	Configured bool   `json:"configured"`
	Connected  bool   `json:"connected"`
	Error      string `json:"error,omitempty"`
	// Version is the FreeSWITCH version the node reported.
	Version string `json:"version,omitempty"`
}

// reasonRetired is the reason of a node a reload removed.
const reasonRetired = "removed_from_config"

func (s *Server) nodeView(n *dispatcher.Node, retired bool, now time.Time) nodeJSON {
	v := nodeJSON{
		ID:          n.ID(),
		Host:        n.Spec.Host,
		SIP:         n.Spec.Addr.String(),
		Transport:   n.Spec.Transport,
		Weight:      n.Spec.Weight,
		MaxCalls:    n.Spec.MaxCalls,
		Priority:    n.Spec.Priority,
		State:       n.State().String(),
		Available:   n.Available(),
		Retired:     retired,
		ActiveCalls: n.Active(),
		Inflight:    n.Inflight(),
	}
	if l := n.Load(); l != nil {
		v.Load = &loadJSON{
			Sessions: l.Sessions, MaxSessions: l.MaxSessions, IdleCPU: l.IdleCPU,
			SessionsPerSec: l.SessionsPerSec, AgeSeconds: now.Sub(l.At).Seconds(),
		}
	}
	if retired {
		v.Reason = reasonRetired
		return v
	}
	st, ok := s.app.Checker().NodeStatus(n.ID())
	if !ok {
		return v
	}
	v.Reason = st.Reason
	v.Since = timePtr(st.Since)
	v.PassiveFailures = st.Passive
	if !st.ProbeAt.IsZero() {
		v.Probe = &probeJSON{
			Status: st.ProbeStatus, Class: st.ProbeClass, RTTMs: millis(st.ProbeRTT),
			At: st.ProbeAt, Error: st.ProbeError,
		}
	}
	if e := st.ESL; e != nil {
		v.ESL = eslJSON{Configured: true, Connected: e.Connected, Version: e.Version}
		if e.Err != nil {
			v.ESL.Error = e.Err.Error()
		}
	}
	return v
}

// listNodes lists the configured nodes in configuration order, then the
// nodes a reload removed that still carry calls (retired, draining).
func (s *Server) listNodes(w http.ResponseWriter, _ *http.Request) {
	now := time.Now()
	snap := s.app.Dispatcher().Snapshot()
	nodes := snap.Nodes()
	out := make([]nodeJSON, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, s.nodeView(n, false, now))
	}
	for _, n := range snap.RetiredWithCalls() {
		out = append(out, s.nodeView(n, true, now))
	}
	writeJSON(w, http.StatusOK, map[string]any{"nodes": out})
}

// lookupNode finds a node, retired ones included; on failure it has
// answered 404.
func (s *Server) lookupNode(w http.ResponseWriter, id string) (n *dispatcher.Node, retired bool, ok bool) {
	snap := s.app.Dispatcher().Snapshot()
	n = snap.Node(id)
	if n == nil {
		writeError(w, http.StatusNotFound, "unknown node %q", id)
		return nil, false, false
	}
	retired = true
	for _, c := range snap.Nodes() {
		if c == n {
			retired = false
			break
		}
	}
	return n, retired, true
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request) {
	n, retired, ok := s.lookupNode(w, r.PathValue("id"))
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, s.nodeView(n, retired, time.Now()))
}

// operatorActions maps the URL's last segment to an operator wish.
var operatorActions = map[string]health.Operator{
	"drain":   health.OperatorDrain,
	"disable": health.OperatorDisable,
	"enable":  health.OperatorNone,
}

// setOperator drains, disables or enables a node on this instance. The new
// state is in force when the answer is sent: no new call goes to a drained
// node after it.
func (s *Server) setOperator(w http.ResponseWriter, r *http.Request) {
	action := r.PathValue("action")
	op, known := operatorActions[action]
	if !known {
		writeError(w, http.StatusNotFound, "unknown action %q (want drain, disable or enable)", action)
		return
	}
	n, retired, ok := s.lookupNode(w, r.PathValue("id"))
	if !ok {
		return
	}
	if retired {
		writeError(w, http.StatusConflict,
			"node %q was removed from the configuration and drains its calls; add it back and reload to %s it", n.ID(), action)
		return
	}
	if err := s.app.Checker().SetOperator(n.ID(), op); err != nil {
		if errors.Is(err, health.ErrUnknownNode) {
			writeError(w, http.StatusConflict, "node %q is not monitored (being added or removed by a reload); retry", n.ID())
			return
		}
		writeError(w, http.StatusConflict, "%v", err)
		return
	}
	v := s.nodeView(n, false, time.Now())
	s.log.Info("node operator state set", zap.String("node", n.ID()), zap.String("action", action),
		zap.String("state", v.State), zap.String("remote", r.RemoteAddr))
	writeJSON(w, http.StatusOK, v)
}
