package dispatcher

import "sync/atomic"

// wrr is smooth weighted round robin. Each snapshot carries a schedule
// computed once when it is published: the sequence nginx's smooth weighted
// round robin would produce over one full cycle (length sum(weight/gcd)),
// in which a node of weight 3 next to two of weight 1 appears as A B A C A,
// not A A A B C. Pick only advances an atomic cursor through it.
//
// The first choice is the node in the cursor's slot. When that node is not
// Available, the slot goes to an Available node chosen by weight (see
// pickWeighted), so a node that is down or full has its share spread over
// the others in proportion to their weights. The fallbacks are the other
// Available nodes in config order, starting just after the first choice, so
// that the fallbacks of consecutive calls are spread too. With all nodes
// Available, N picks give each node its weighted share to within one pick per
// cycle; with equal weights that is plain round robin.
//
// Use it when nodes are alike and load reports are missing or untrusted.
type wrr struct{}

// Pick implements Policy.
func (*wrr) Pick(s *Snapshot, _ Key, dst []*Node) []*Node {
	return s.wrr.pick(s.nodes, dst)
}

// String returns the policy's config name.
func (*wrr) String() string { return "weighted_round_robin" }

// maxScheduleLen bounds a schedule's length (64 KiB of indexes). Weights
// whose reduced sum is larger are scaled down proportionally, keeping every
// weight >= 1; shares then drift by at most about n/maxScheduleLen.
const maxScheduleLen = 1 << 14

// schedule is a smooth weighted round-robin cycle over a list of members
// (all nodes, or one priority group).
type schedule struct {
	order   []uint32 // member indexes, one cycle
	weights []int    // reduced weights, for pickWeighted
	cursor  *cursor
}

// cursor is the position in a schedule, allocated on its own and padded so
// that picks on other cores, which all increment it, do not also invalidate
// the cache line holding the snapshot's read-only indexes.
type cursor struct {
	_ [64]byte
	n atomic.Uint64
	_ [56]byte
}

// newSchedule computes one cycle of smooth weighted round robin over
// members: at each step every member's current weight grows by its weight,
// the largest (first on ties) is chosen and loses the total. Weights are
// first divided by their greatest common divisor, so equal weights give a
// cycle of length n: 0, 1, …, n-1.
func newSchedule(members []*Node) schedule {
	sc := schedule{cursor: new(cursor)}
	if len(members) == 0 {
		return sc
	}
	g := 0
	for _, n := range members {
		g = gcd(g, n.Spec.Weight)
	}
	w := make([]int, len(members))
	total := 0
	for i, n := range members {
		w[i] = n.Spec.Weight / g
		total += w[i]
	}
	if total > maxScheduleLen {
		scaled := 0
		for i := range w {
			w[i] = max(1, int(float64(w[i])*maxScheduleLen/float64(total)))
			scaled += w[i]
		}
		total = scaled
	}
	sc.weights = w
	sc.order = make([]uint32, 0, total)
	current := make([]int, len(w))
	for len(sc.order) < total {
		best := 0
		for i := range w {
			current[i] += w[i]
			if current[i] > current[best] {
				best = i
			}
		}
		current[best] -= total
		sc.order = append(sc.order, uint32(best))
	}
	return sc
}

// pick appends the first choice and fallbacks from members to dst.
func (sc *schedule) pick(members, dst []*Node) []*Node {
	n, l := len(members), len(sc.order)
	if n == 0 || len(dst) >= cap(dst) {
		return dst
	}
	c := sc.cursor.n.Add(1) - 1
	cycle, slot := c/uint64(l), c%uint64(l)
	first := int(sc.order[slot])
	if !members[first].pickable() {
		// The slot's node is out: give the slot to an Available node
		// chosen by weight, so that the others share its calls in
		// proportion to their weights (taking the next slot's node
		// instead would hand them all to whoever follows it in the
		// schedule). cycle+slot walks each slot, cycle after cycle,
		// along the whole weight line; c alone would not when the
		// schedule length and the Available weight share a factor.
		if first = sc.pickWeighted(members, cycle+slot); first < 0 {
			return dst
		}
	}
	dst = append(dst, members[first])

	for i, j := 1, first+1; i < n && len(dst) < cap(dst); i, j = i+1, j+1 {
		if j == n {
			j = 0
		}
		if members[j].pickable() {
			dst = append(dst, members[j])
		}
	}
	return dst
}

// pickWeighted returns an Available member chosen by v, or -1 when none is
// Available: with the Available members' weights laid end to end, the one
// covering v modulo their sum. As v steps by one, each Available member is
// chosen in proportion to its weight. It costs two passes over the members,
// paid only by picks whose slot is out.
func (sc *schedule) pickWeighted(members []*Node, v uint64) int {
	total := 0
	for i, m := range members {
		if m.pickable() {
			total += sc.weights[i]
		}
	}
	if total == 0 {
		return -1
	}
	target := int(v % uint64(total))
	last := -1
	for i, m := range members {
		if !m.pickable() {
			continue
		}
		last = i
		if target -= sc.weights[i]; target < 0 {
			return i
		}
	}
	return last // availability changed between the passes
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// Interface guard.
var _ Policy = (*wrr)(nil)
