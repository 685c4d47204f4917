package dispatcher

// priority is priority groups with spill-over. Nodes are grouped by
// Spec.Priority, lowest number first (groups are precomputed per snapshot).
// The first choice comes from the first group that has an Available node,
// chosen inside the group by smooth weighted round robin (each group has its
// own schedule and cursor, as in weighted_round_robin); the fallbacks are the
// group's other Available nodes, then the Available nodes of the following
// groups in order, each group again starting at its own round-robin position.
// A call therefore spills into the next group only when the groups before it
// are down, full or exhausted by failover.
//
// Use it for a primary site with a standby one, or to keep a reserve of
// nodes that take calls only when the main pool cannot.
type priority struct{}

// Pick implements Policy.
func (*priority) Pick(s *Snapshot, _ Key, dst []*Node) []*Node {
	for i := range s.groups {
		if len(dst) >= cap(dst) {
			break
		}
		g := &s.groups[i]
		dst = g.sched.pick(g.members, dst)
	}
	return dst
}

// String returns the policy's config name.
func (*priority) String() string { return "priority" }

// Interface guard.
var _ Policy = (*priority)(nil)
