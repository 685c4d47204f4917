package dispatcher

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Snapshot is an immutable node set plus the indexes every policy needs,
// built once when the set is published: the weighted round-robin schedule,
// the priority groups with their own schedules, and the per-node hash seeds.
// Policies read a Snapshot without locks; the only things that change under
// them are the nodes' live atomics and the round-robin cursors.
//
// A Snapshot also remembers retired nodes (removed by a reload): they are not
// selectable and not in Nodes, but Node and NodeBySource still find them, so
// that in-dialog requests of their calls keep routing.
type Snapshot struct {
	version uint64
	nodes   []*Node // selectable, config order
	lives   []*live // lives[i] is nodes[i].live, one pointer hop less
	retired []*Node // removed by a reload, newest first

	byID   map[string]*Node         // nodes and retired
	byAddr map[netip.AddrPort]*Node // sourceKey(Addr) -> first node with it
	byIP   map[netip.Addr]*Node     // its IP -> first node with it

	// weighted round robin over nodes.
	wrr schedule
	// priority groups, ascending Priority.
	groups []group
	// hash: seeds[i] and invWeight[i] belong to nodes[i]. hashSlots holds
	// the same nodes grouped by Weight into hashClasses (one class when all
	// weights are equal), for hashPolicy's fast path.
	seeds       []uint64
	invWeight   []float64
	hashSlots   []hashSlot
	hashClasses []hashClass
}

// group is one priority level of the priority policy.
type group struct {
	members []*Node // config order
	sched   schedule
}

// newSnapshot builds a snapshot and its indexes. nodes and retired must not
// share IDs; the caller (Dispatcher) guarantees it.
func newSnapshot(version uint64, nodes, retired []*Node) *Snapshot {
	s := &Snapshot{
		version: version,
		nodes:   nodes,
		retired: retired,
		byID:    make(map[string]*Node, len(nodes)+len(retired)),
		byAddr:  make(map[netip.AddrPort]*Node, len(nodes)+len(retired)),
		byIP:    make(map[netip.Addr]*Node, len(nodes)+len(retired)),
	}
	// Selectable nodes first, so that an address shared by a live node and
	// a retired one resolves to the live node.
	for _, list := range [][]*Node{nodes, retired} {
		for _, n := range list {
			s.byID[n.Spec.ID] = n
			ap := sourceKey(n.Spec.Addr)
			if _, ok := s.byAddr[ap]; !ok {
				s.byAddr[ap] = n
			}
			if _, ok := s.byIP[ap.Addr()]; !ok {
				s.byIP[ap.Addr()] = n
			}
		}
	}

	s.lives = make([]*live, len(nodes))
	for i, n := range nodes {
		s.lives[i] = n.live
	}
	s.wrr = newSchedule(nodes)

	s.seeds = make([]uint64, len(nodes))
	s.invWeight = make([]float64, len(nodes))
	for i, n := range nodes {
		s.seeds[i] = xxhash.Sum64String(n.Spec.ID)
		s.invWeight[i] = 1 / float64(n.Spec.Weight)
		s.hashSlots = append(s.hashSlots, hashSlot{seed: s.seeds[i], lv: n.live, idx: i})
	}
	slices.SortStableFunc(s.hashSlots, func(a, b hashSlot) int {
		return cmp.Compare(nodes[a.idx].Spec.Weight, nodes[b.idx].Spec.Weight)
	})
	for i, sl := range s.hashSlots {
		if i+1 == len(s.hashSlots) || nodes[s.hashSlots[i+1].idx].Spec.Weight != nodes[sl.idx].Spec.Weight {
			s.hashClasses = append(s.hashClasses, hashClass{end: i + 1, invWeight: s.invWeight[sl.idx]})
		}
	}

	byPriority := slices.Clone(nodes)
	slices.SortStableFunc(byPriority, func(a, b *Node) int {
		return cmp.Compare(a.Spec.Priority, b.Spec.Priority)
	})
	for i := 0; i < len(byPriority); {
		j := i + 1
		for j < len(byPriority) && byPriority[j].Spec.Priority == byPriority[i].Spec.Priority {
			j++
		}
		members := byPriority[i:j:j]
		s.groups = append(s.groups, group{members: members, sched: newSchedule(members)})
		i = j
	}
	return s
}

// Nodes returns the selectable nodes in config order. The slice is shared:
// do not modify it.
func (s *Snapshot) Nodes() []*Node {
	return s.nodes[:len(s.nodes):len(s.nodes)]
}

// RetiredWithCalls returns the nodes a reload removed that still have calls
// (active ones or INVITEs in flight), newest first. Metrics and the admin
// API list them after the configured nodes, so that their calls can be
// watched ending; a retired node without calls is not shown.
func (s *Snapshot) RetiredWithCalls() []*Node {
	var out []*Node
	for _, n := range s.retired {
		if n.Active() > 0 || n.Inflight() > 0 {
			out = append(out, n)
		}
	}
	return out
}

// Node returns the node with the given ID, retired nodes included, or nil.
func (s *Snapshot) Node(id string) *Node {
	return s.byID[id]
}

// NodeBySource tells which node a request came from. It returns the node
// whose Addr equals ap; failing that, the first node (config order, then
// retired nodes) whose IP equals ap's IP, because a node's TCP and TLS
// connections come from ephemeral ports; failing that, nil (the request
// comes from a carrier). IPv4-mapped IPv6 addresses, as seen on dual-stack
// sockets, compare equal to their IPv4 form; IPv6 zones are ignored. It does
// not allocate.
func (s *Snapshot) NodeBySource(ap netip.AddrPort) *Node {
	ap = sourceKey(ap)
	if n, ok := s.byAddr[ap]; ok {
		return n
	}
	return s.byIP[ap.Addr()]
}

// Version increases by one with every snapshot a Dispatcher publishes; the
// first is 1.
func (s *Snapshot) Version() uint64 {
	return s.version
}

// anyAvailable reports whether any selectable node is Available.
func (s *Snapshot) anyAvailable() bool {
	for _, n := range s.nodes {
		if n.Available() {
			return true
		}
	}
	return false
}

// sourceKey is the form addresses are indexed and looked up in: IPv4-mapped
// IPv6 unmapped, and without IPv6 zone, which a source address may carry and
// a configured one usually does not.
func sourceKey(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap().WithZone(""), ap.Port())
}
