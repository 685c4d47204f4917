package dispatcher

import (
	"math"
	"net/netip"
	"sync/atomic"
	"time"
)

// Spec is the configured, immutable part of a node. A Dispatcher validates
// it (see New); nothing in this package fills in defaults.
type Spec struct {
	// ID names the node in logs, metrics, tokens and the admin API; unique
	// and non-empty.
	ID string
	// Host is the node's address as configured (hostname or IP), for logs.
	Host string
	// Addr is the resolved address SIP is sent to.
	Addr netip.AddrPort
	// Transport is "UDP", "TCP" or "TLS" (New accepts any case and stores
	// it upper-cased).
	Transport string
	// Weight is the node's share of new calls relative to the others, >= 1.
	Weight int
	// MaxCalls caps the calls this instance keeps on the node (Active plus
	// Inflight); 0 means no local cap.
	MaxCalls int
	// Priority groups nodes for the priority policy; lower is preferred.
	Priority int
}

// Load is a load report from a node's FreeSWITCH Event Socket. The health
// package fills it; the dispatcher only reads it. A Load is immutable once
// passed to SetLoad.
type Load struct {
	Sessions       int64     // Session-Count
	MaxSessions    int64     // Max-Sessions
	IdleCPU        float64   // Idle-CPU, percent 0..100
	SessionsPerSec int64     // Session-Per-Sec
	At             time.Time // when the figures were taken
}

// defaultCapacity is the capacity a node is assumed to have when neither
// MaxCalls nor an ESL Max-Sessions figure is known. It only scales the
// least-load score, so the exact value matters little as long as it is the
// same for all such nodes.
const defaultCapacity = 1000

// Node is one FreeSWITCH node as a Snapshot sees it: the configured Spec plus
// a pointer to live state kept in atomics.
//
// Configuration and live state are apart on purpose: a reload builds new Node
// values (a new Spec), but a node whose ID persists keeps its live state —
// its health state, call counters and load — so a reload never makes a busy
// node look idle or a dead node look alive. Node values must not be copied;
// pass *Node. Nodes come from a Dispatcher: a Node built as a literal has no
// live state and its methods panic.
type Node struct {
	_    noCopy
	Spec Spec
	live *live
	// dest is Spec.Addr as host:port, rendered once: it is where every
	// request to the node goes.
	dest string
}

// Dest returns the node's address as host:port (Spec.Addr rendered once).
func (n *Node) Dest() string {
	if n.dest == "" {
		return n.Spec.Addr.String()
	}
	return n.dest
}

// live is the mutable part of a node, shared by every Node value with the
// same ID across snapshots. All fields are atomics: policies read them
// without locks while health, the proxy and the admin API write them.
//
// Policies do not evaluate Available and Score from the inputs on every pick:
// with 64 nodes that is most of the cost of a pick. Instead every write
// refreshes verdict, a single word holding the node's least-load ranking key
// when it is Available and unavailable when it is not, so a policy reads one
// atomic per node. Writes are rare next to picks (a few per call against one
// read per node per call), so this moves work to the cheap side.
type live struct {
	// Inputs.
	state    atomic.Int32 // State
	active   atomic.Int64 // confirmed calls
	inflight atomic.Int64 // INVITEs forwarded without a final response
	load     atomic.Pointer[Load]
	weight   atomic.Int64 // Spec.Weight of the current configuration
	maxCalls atomic.Int64 // Spec.MaxCalls of the current configuration

	// gen counts input changes; see refresh.
	gen atomic.Uint64
	// verdict is math.Float64bits(score) when the node is Available, else
	// unavailable. Scores are finite and >= 0, and for those the IEEE bit
	// pattern orders like the value, so policies rank nodes on it as an
	// integer.
	verdict atomic.Uint64

	// retired is set while the node is out of the configuration;
	// preRetire is the state it had when it was retired, so that a revival
	// can undo the retirement (see Dispatcher.Update).
	retired   atomic.Bool
	preRetire atomic.Int32
}

// unavailable is the verdict of a node that must not be picked. Every
// ranking key policies use is below it.
const unavailable = math.MaxUint64

// newLive returns live state for a node that has never been seen before: it
// starts Up, so that a balancer without health checks still works; health
// takes it down after its first failed probes.
func newLive(sp Spec) *live {
	lv := new(live) // the zero State is StateUp
	lv.configure(sp)
	return lv
}

// configure adopts the parts of a (new) Spec the verdict depends on.
func (lv *live) configure(sp Spec) {
	lv.weight.Store(int64(sp.Weight))
	lv.maxCalls.Store(int64(sp.MaxCalls))
	lv.refresh()
}

// refresh recomputes verdict after an input changed; every writer calls it
// after its change. Two writers may race, and the one computing from older
// inputs may store last: gen detects that. A writer stores, then checks that
// no input changed since it read gen, and recomputes if one did. The last
// change's writer, or anyone who stores after it, therefore computes from
// the final inputs, and a stale store is always followed by a fresh one.
func (lv *live) refresh() {
	lv.gen.Add(1)
	for {
		g := lv.gen.Load()
		lv.verdict.Store(lv.computeVerdict())
		if lv.gen.Load() == g {
			return
		}
	}
}

func (lv *live) computeVerdict() uint64 {
	active, inflight := lv.active.Load(), lv.inflight.Load()
	maxCalls := lv.maxCalls.Load()
	if !admits(State(lv.state.Load()), maxCalls, active, inflight) {
		return unavailable
	}
	return math.Float64bits(score(lv.weight.Load(), maxCalls, active, inflight, lv.load.Load()))
}

// ID returns Spec.ID.
func (n *Node) ID() string { return n.Spec.ID }

// State returns the node's current state.
func (n *Node) State() State { return State(n.live.state.Load()) }

// SetState sets the node's state and returns the previous one.
func (n *Node) SetState(s State) (old State) {
	old = State(n.live.state.Swap(int32(s)))
	n.live.refresh()
	return old
}

// Available reports whether the node may take a new call now: its state is
// StateUp and, when MaxCalls is set, Active()+Inflight() is below it. This
// is the single predicate of selection; policies read it precomputed (see
// live) and agree with it whenever no write is in progress.
func (n *Node) Available() bool {
	lv := n.live
	return admits(State(lv.state.Load()), int64(n.Spec.MaxCalls), lv.active.Load(), lv.inflight.Load())
}

// admits is the Available rule.
func admits(s State, maxCalls, active, inflight int64) bool {
	return s.AcceptsNewCalls() && (maxCalls == 0 || active+inflight < maxCalls)
}

// pickable is Available as policies read it: one atomic load.
func (n *Node) pickable() bool { return n.live.verdict.Load() != unavailable }

// Active returns the number of confirmed calls this instance has on the node.
func (n *Node) Active() int64 { return n.live.active.Load() }

// AddActive adds d to the active call count and returns the new value. The
// count never goes below 0, so a duplicate release cannot make a node look
// less loaded than an idle one.
func (n *Node) AddActive(d int64) int64 {
	v := addFloor0(&n.live.active, d)
	n.live.refresh()
	return v
}

// SetActive sets the active call count (negative values store 0); used when
// the count is rebuilt, e.g. from the affinity store.
func (n *Node) SetActive(v int64) {
	n.live.active.Store(max(v, 0))
	n.live.refresh()
}

// Inflight returns the number of INVITEs sent to the node that have no final
// response yet.
func (n *Node) Inflight() int64 { return n.live.inflight.Load() }

// AddInflight adds d to the in-flight INVITE count and returns the new value;
// the count never goes below 0.
func (n *Node) AddInflight(d int64) int64 {
	v := addFloor0(&n.live.inflight, d)
	n.live.refresh()
	return v
}

// Load returns the node's last load report, or nil when unknown or stale.
// The caller must not modify it.
func (n *Node) Load() *Load { return n.live.load.Load() }

// SetLoad publishes a load report (an atomic pointer swap); nil clears it.
// Whoever owns load figures clears them when they go stale: the dispatcher
// does not look at Load.At.
func (n *Node) SetLoad(l *Load) {
	n.live.load.Store(l)
	n.live.refresh()
}

// Score returns the node's least-load score; lower is better. See leastLoad
// for the formula and why it is shaped that way.
func (n *Node) Score() float64 {
	lv := n.live
	return score(int64(n.Spec.Weight), int64(n.Spec.MaxCalls), lv.active.Load(), lv.inflight.Load(), lv.load.Load())
}

// score is the least-load formula (see leastLoad). The result is finite and
// >= 0 for weight >= 1, whatever the load report says.
func score(weight, maxCalls, active, inflight int64, l *Load) float64 {
	calls := active + inflight
	capacity := maxCalls
	busyCPU := 0.0
	if l != nil {
		calls = max(calls, l.Sessions+inflight)
		if capacity <= 0 {
			capacity = l.MaxSessions
		}
		busyCPU = 1 - l.IdleCPU/100
		if !(busyCPU > 0) { // also catches NaN
			busyCPU = 0
		} else if busyCPU > 1 {
			busyCPU = 1
		}
	}
	if capacity <= 0 {
		capacity = defaultCapacity
	}
	return (float64(calls)/float64(capacity) + 0.5*busyCPU) / float64(weight)
}

// addFloor0 adds d to v without letting it go below 0 and returns the new
// value.
func addFloor0(v *atomic.Int64, d int64) int64 {
	if d >= 0 {
		// v is never negative, so adding a non-negative delta cannot
		// cross 0: one atomic add is enough.
		return v.Add(d)
	}
	for {
		old := v.Load()
		n := max(old+d, 0)
		if v.CompareAndSwap(old, n) {
			return n
		}
	}
}

// noCopy makes go vet's copylocks check report copies of the struct that
// embeds it.
type noCopy struct{}

func (*noCopy) Lock()   {}
func (*noCopy) Unlock() {}
