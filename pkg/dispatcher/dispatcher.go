package dispatcher

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
)

// Dispatcher holds the current Snapshot and Policy, each in an atomic
// pointer. Pick, Snapshot, Node and AnyAvailable never lock; Update builds a
// new Snapshot off to the side and swaps it in. The zero Dispatcher is not
// usable: use New.
type Dispatcher struct {
	snap   atomic.Pointer[Snapshot]
	policy atomic.Pointer[policyRef]

	// mu serializes Update, including the observer calls, so observers see
	// snapshots in version order.
	mu sync.Mutex

	obsMu     sync.Mutex
	observers []func(*Snapshot)
}

// policyRef boxes a Policy so it fits an atomic.Pointer.
type policyRef struct{ p Policy }

// New validates specs and returns a Dispatcher whose first Snapshot (version
// 1) holds them, every node Up with zeroed counters and no load. Validation
// requires unique non-empty IDs, Weight >= 1, MaxCalls >= 0, a valid Addr
// with a non-zero port, Transport UDP, TCP or TLS (any case; stored
// upper-cased), and at most 65536 nodes. All problems are reported at once, each naming its node.
// An empty spec list is valid: every Pick then returns no candidate.
func New(p Policy, specs []Spec) (*Dispatcher, error) {
	if p == nil {
		return nil, errors.New("dispatcher: nil policy")
	}
	specs, err := validateSpecs(specs)
	if err != nil {
		return nil, err
	}
	nodes := make([]*Node, len(specs))
	for i, sp := range specs {
		nodes[i] = &Node{Spec: sp, live: newLive(sp), dest: sp.Addr.String()}
	}
	d := &Dispatcher{}
	d.snap.Store(newSnapshot(1, nodes, nil))
	d.policy.Store(&policyRef{p})
	return d, nil
}

// Snapshot returns the current snapshot.
func (d *Dispatcher) Snapshot() *Snapshot { return d.snap.Load() }

// Pick appends candidates for a new call to dst with the current policy over
// the current snapshot; see Policy. It never blocks and does not allocate
// when dst has room. When it appends nothing, no node takes new calls: the
// caller answers 503 with Retry-After and counts it. It never sends calls to
// unavailable nodes "in case health checks are wrong".
func (d *Dispatcher) Pick(k Key, dst []*Node) []*Node {
	return d.policy.Load().p.Pick(d.snap.Load(), k, dst)
}

// Node returns the node with the given ID in the current snapshot, retired
// nodes included, or nil.
func (d *Dispatcher) Node(id string) *Node { return d.snap.Load().Node(id) }

// Policy returns the current policy.
func (d *Dispatcher) Policy() Policy { return d.policy.Load().p }

// SetPolicy makes p the policy of subsequent picks. It panics if p is nil,
// which can only come from ignoring NewPolicy's error.
func (d *Dispatcher) SetPolicy(p Policy) {
	if p == nil {
		panic("dispatcher: SetPolicy(nil)")
	}
	d.policy.Store(&policyRef{p})
}

// AnyAvailable reports whether at least one node of the current snapshot is
// Available; the proxy answers OPTIONS aimed at the balancer itself with 200
// while it is true and 503 when it is not.
func (d *Dispatcher) AnyAvailable() bool { return d.snap.Load().anyAvailable() }

// OnChange registers f to be called, synchronously and in order, with every
// snapshot Update publishes, after it is published. It is not called for the
// snapshot New built: read that with Snapshot. f runs while Update holds its
// lock, so it must return quickly and must not call Update.
func (d *Dispatcher) OnChange(f func(*Snapshot)) {
	d.obsMu.Lock()
	defer d.obsMu.Unlock()
	d.observers = append(d.observers, f)
}

// Update validates specs (as New does) and publishes a snapshot holding
// them, in their order. On a validation error nothing changes.
//
// A node whose ID was already known keeps its live state — state, counters
// and load — even if its address, weight or capacity changed; if its Spec is
// unchanged it keeps its *Node too. A node no longer in specs is retired: its
// state becomes StateDraining, it leaves Nodes and is never picked, but Node
// and NodeBySource still find it so that in-dialog requests of its calls keep
// routing. Retired nodes are kept for the life of the Dispatcher, because
// calls routed by another instance's tokens may still name them.
//
// A retired node that comes back is revived with its live state. If its state
// is still the StateDraining the retirement set, it returns to StateUp —
// unless an operator had drained or disabled it before it was removed, in
// which case it returns to that state. Health then judges it like any node.
//
// added lists the IDs that became selectable (new or revived), removed those
// that were retired, both in config order; observers registered with
// OnChange run before Update returns.
func (d *Dispatcher) Update(specs []Spec) (added, removed []string, err error) {
	specs, err = validateSpecs(specs)
	if err != nil {
		return nil, nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()

	old := d.snap.Load()
	nodes := make([]*Node, len(specs))
	inNew := make(map[string]bool, len(specs))
	var revived []*Node
	for i, sp := range specs {
		inNew[sp.ID] = true
		prev := old.byID[sp.ID]
		switch {
		case prev == nil:
			nodes[i] = &Node{Spec: sp, live: newLive(sp), dest: sp.Addr.String()}
		case prev.Spec == sp:
			nodes[i] = prev
		default:
			nodes[i] = &Node{Spec: sp, live: prev.live, dest: sp.Addr.String()}
			prev.live.configure(sp)
		}
		if prev == nil || prev.live.retired.Load() {
			added = append(added, sp.ID)
		}
		if prev != nil && prev.live.retired.Load() {
			revived = append(revived, nodes[i])
		}
	}
	var retired []*Node
	for _, n := range old.nodes {
		if !inNew[n.Spec.ID] {
			retire(n)
			retired = append(retired, n)
			removed = append(removed, n.Spec.ID)
		}
	}
	for _, n := range old.retired {
		if !inNew[n.Spec.ID] {
			retired = append(retired, n)
		}
	}
	for _, n := range revived {
		revive(n)
	}

	s := newSnapshot(old.version+1, nodes, retired)
	d.snap.Store(s)

	d.obsMu.Lock()
	observers := d.observers[:len(d.observers):len(d.observers)]
	d.obsMu.Unlock()
	for _, f := range observers {
		f(s)
	}
	return added, removed, nil
}

// retire takes a node out of the configuration; see Update.
func retire(n *Node) {
	lv := n.live
	lv.preRetire.Store(lv.state.Swap(int32(StateDraining)))
	lv.retired.Store(true)
	lv.refresh()
}

// revive undoes retire; see Update. If someone changed the state while the
// node was retired, that state stands.
func revive(n *Node) {
	lv := n.live
	if !lv.retired.Swap(false) {
		return
	}
	back := StateUp
	if prev := State(lv.preRetire.Load()); prev == StateDraining || prev == StateDisabled {
		back = prev
	}
	lv.state.CompareAndSwap(int32(StateDraining), int32(back))
	lv.refresh()
}

// validateSpecs checks specs and returns a normalised copy (Transport
// upper-cased). Every problem is reported, each naming the node.
func validateSpecs(specs []Spec) ([]Spec, error) {
	out := make([]Spec, len(specs))
	var errs []error
	if len(specs) > maxNodes {
		errs = append(errs, fmt.Errorf("dispatcher: %d nodes, at most %d supported", len(specs), maxNodes))
	}
	seen := make(map[string]int, len(specs))
	for i, sp := range specs {
		name := fmt.Sprintf("node %q", sp.ID)
		if sp.ID == "" {
			name = fmt.Sprintf("node #%d", i)
			errs = append(errs, fmt.Errorf("dispatcher: %s: empty ID", name))
		} else if j, dup := seen[sp.ID]; dup {
			errs = append(errs, fmt.Errorf("dispatcher: %s: duplicate ID (nodes #%d and #%d)", name, j, i))
		} else {
			seen[sp.ID] = i
		}
		if sp.Weight < 1 {
			errs = append(errs, fmt.Errorf("dispatcher: %s: weight must be >= 1, got %d", name, sp.Weight))
		}
		if sp.MaxCalls < 0 {
			errs = append(errs, fmt.Errorf("dispatcher: %s: max_calls must be >= 0, got %d", name, sp.MaxCalls))
		}
		if !sp.Addr.IsValid() || sp.Addr.Port() == 0 {
			errs = append(errs, fmt.Errorf("dispatcher: %s: invalid address %q (host %q): need IP and non-zero port", name, sp.Addr.String(), sp.Host))
		}
		switch t := strings.ToUpper(sp.Transport); t {
		case "UDP", "TCP", "TLS":
			sp.Transport = t
		default:
			errs = append(errs, fmt.Errorf("dispatcher: %s: transport must be UDP, TCP or TLS, got %q", name, sp.Transport))
		}
		out[i] = sp
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}
