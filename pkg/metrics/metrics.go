// Package metrics holds sipbalancer's Prometheus metrics, registered on a
// registry the caller injects (no globals, so tests and several instances in
// one process do not collide).
//
// Rules (CoreDNS's and Prometheus's): every name starts with sipbalancer_,
// counters end in _total, units are base units (seconds, ratios), and labels
// are bounded: method (a fixed list, others are "OTHER"), direction, status
// class, node ID (from configuration), reason (a fixed set of labels) —
// never a Call-ID or an address.
//
// Two kinds of series:
//   - call-path events (SIP) are counters and a histogram updated by the
//     proxy through the Recorder methods, which only touch pre-resolved
//     counters (no allocation, no map of label values per call where it
//     can be avoided);
//   - state (nodes, the store, the proxy) is read at scrape time by
//     collectors, so keeping it current costs the call path nothing.
package metrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
)

// Namespace prefixes every metric name.
const Namespace = "sipbalancer"

// methods are the SIP methods with a label of their own.
var methods = []sip.RequestMethod{
	sip.INVITE, sip.ACK, sip.BYE, sip.CANCEL, sip.OPTIONS, sip.UPDATE, sip.INFO, sip.PRACK,
	sip.REFER, sip.NOTIFY, sip.MESSAGE, sip.SUBSCRIBE, sip.PUBLISH, sip.REGISTER,
}

const otherMethod = "OTHER"

func methodIndex(m sip.RequestMethod) int {
	for i, x := range methods {
		if x == m {
			return i
		}
	}
	return len(methods)
}

func methodLabel(i int) string {
	if i < len(methods) {
		return string(methods[i])
	}
	return otherMethod
}

// Directions of a request: where it comes from.
const (
	FromCarrier = 0
	FromNode    = 1
)

var directionLabels = [2]string{"from_carrier", "from_node"}

// Call outcomes, for the answer ratio.
const (
	OutcomeAnswered  = "answered"  // 2xx relayed to the caller
	OutcomeRejected  = "rejected"  // a final non-2xx from a node relayed
	OutcomeCancelled = "cancelled" // the caller cancelled
	OutcomeFailed    = "failed"    // the balancer answered 503/408: no node could take or finish it
)

// Recorder records call-path events. A nil *Recorder records nothing, so
// components can hold one unconditionally.
type Recorder struct {
	requests  [][2]prometheus.Counter    // [method][direction]
	responses [][7][2]prometheus.Counter // [method][class][direction]

	dispatches     *prometheus.CounterVec
	failovers      *prometheus.CounterVec
	allUnavailable prometheus.Counter
	reordered      prometheus.Counter
	rejected       *prometheus.CounterVec
	setup          prometheus.Histogram
	outcomes       *prometheus.CounterVec
	stateChanges   *prometheus.CounterVec

	perNode sync.Map // node ID -> prometheus.Counter (dispatches), cached
}

// NewRecorder registers the call-path series on reg.
func NewRecorder(reg prometheus.Registerer) *Recorder {
	r := &Recorder{}
	reqs := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "sip", Name: "requests_total",
		Help: "SIP requests received, by method and direction (from_carrier, from_node).",
	}, []string{"method", "direction"})
	resps := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "sip", Name: "responses_total",
		Help: "SIP responses sent (relayed or generated), by request method, status class and the direction of the request.",
	}, []string{"method", "class", "direction"})
	r.dispatches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "dispatches_total",
		Help: "New calls (and out-of-dialog requests) sent to a node, failover attempts included.",
	}, []string{"node"})
	r.failovers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "failovers_total",
		Help: "Branches abandoned for the next candidate, by node and reason (timeout, transport, code_503, code_5xx...).",
	}, []string{"node", "reason"})
	r.allUnavailable = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Name: "dispatch_all_unavailable_total",
		Help: "New calls answered 503 because no node could take them (none available, or every candidate failed).",
	})
	r.reordered = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "sip", Name: "ringing_reordered_total",
		Help: "18x responses that reached the INVITE transaction after the final response (concurrent handling) and were relayed before it.",
	})
	r.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "sip", Name: "rejected_total",
		Help: "Requests the balancer refused itself, by reason (malformed, max_forwards, loop, no_dialog, not_a_node, draining, ...).",
	}, []string{"reason"})
	r.setup = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "call_setup_seconds",
		Help:    "Time from an INVITE's arrival to the first 18x or 2xx relayed to the caller.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	})
	r.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "calls_total",
		Help: "New calls by outcome: answered, rejected (by a node), cancelled (by the caller), failed (answered by the balancer).",
	}, []string{"outcome"})
	r.stateChanges = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Subsystem: "node", Name: "state_changes_total",
		Help: "Node state changes, by node, new state and reason.",
	}, []string{"node", "state", "reason"})
	reg.MustRegister(reqs, resps, r.dispatches, r.failovers, r.allUnavailable, r.reordered, r.rejected, r.setup, r.outcomes, r.stateChanges)

	n := len(methods) + 1
	r.requests = make([][2]prometheus.Counter, n)
	r.responses = make([][7][2]prometheus.Counter, n)
	for i := 0; i < n; i++ {
		m := methodLabel(i)
		for d, dl := range directionLabels {
			r.requests[i][d] = reqs.WithLabelValues(m, dl)
			for c := 1; c <= 6; c++ {
				r.responses[i][c][d] = resps.WithLabelValues(m, strconv.Itoa(c)+"xx", dl)
			}
		}
	}
	for _, o := range []string{OutcomeAnswered, OutcomeRejected, OutcomeCancelled, OutcomeFailed} {
		r.outcomes.WithLabelValues(o)
	}
	return r
}

// Request counts a request received.
func (r *Recorder) Request(m sip.RequestMethod, direction int) {
	if r == nil {
		return
	}
	r.requests[methodIndex(m)][direction&1].Inc()
}

// Response counts a response sent for a request of method m that came from
// direction.
func (r *Recorder) Response(m sip.RequestMethod, code int, direction int) {
	if r == nil {
		return
	}
	c := code / 100
	if c < 1 || c > 6 {
		return
	}
	r.responses[methodIndex(m)][c][direction&1].Inc()
}

// Dispatched counts a request sent to node.
func (r *Recorder) Dispatched(node string) {
	if r == nil {
		return
	}
	if c, ok := r.perNode.Load(node); ok {
		c.(prometheus.Counter).Inc()
		return
	}
	c := r.dispatches.WithLabelValues(node)
	r.perNode.Store(node, c)
	c.Inc()
}

// FailedOver counts an abandoned branch.
func (r *Recorder) FailedOver(node, reason string) {
	if r == nil {
		return
	}
	r.failovers.WithLabelValues(node, reason).Inc()
}

// AllUnavailable counts a call no node could take.
func (r *Recorder) AllUnavailable() {
	if r == nil {
		return
	}
	r.allUnavailable.Inc()
}

// Rejected counts a request refused by the balancer itself.
func (r *Recorder) Rejected(reason string) {
	if r == nil {
		return
	}
	r.rejected.WithLabelValues(reason).Inc()
}

// RingingRecovered counts an 18x relayed before the final response it had
// fallen behind.
func (r *Recorder) RingingRecovered() {
	if r == nil {
		return
	}
	r.reordered.Inc()
}

// CallSetup observes the time to the first 18x or 2xx.
func (r *Recorder) CallSetup(d time.Duration) {
	if r == nil {
		return
	}
	r.setup.Observe(d.Seconds())
}

// CallOutcome counts how a new call ended its INVITE transaction.
func (r *Recorder) CallOutcome(outcome string) {
	if r == nil {
		return
	}
	r.outcomes.WithLabelValues(outcome).Inc()
}

// StateChange counts a node state change.
func (r *Recorder) StateChange(node, state, reason string) {
	if r == nil {
		return
	}
	r.stateChanges.WithLabelValues(node, state, reason).Inc()
}
