package dispatcher

import "math/rand/v2"

// leastLoad is the default policy: the power of two random choices over the
// nodes' least-load scores. It draws two distinct Available nodes at random
// and takes the one with the lower Score (either on a tie); the fallbacks are
// the remaining Available nodes in ascending Score.
//
// Why not simply the lowest score: several sipbalancer instances share the
// pool, and between two ESL load reports they all see the same figures. If
// each sent every new call to the single least-loaded node they would all
// herd onto it at once. Two random choices still avoid loaded nodes (the
// worst node is never a first choice while any other is Available) but
// spread the calls.
//
// A node's score, as computed by Node.Score:
//
//	calls    = Active + Inflight
//	           or, with a load report l, max(calls, l.Sessions + Inflight)
//	capacity = MaxCalls if > 0, else l.MaxSessions if known and > 0, else 1000
//	busyCPU  = clamp(1 - l.IdleCPU/100, 0, 1), 0 without a load report
//	score    = (calls/capacity + 0.5·busyCPU) / Weight
//
// calls counts this instance's own calls and in-flight INVITEs, and the
// node's own session count when ESL reports it (which includes other
// instances' calls), plus our in-flight INVITEs that the report cannot know
// about yet. CPU counts for half, so a node that is burning CPU (e.g.
// transcoding) with few calls is still avoided. Dividing by Weight makes a
// node of weight 2 look half as loaded.
//
// Use it unless there is a reason not to.
type leastLoad struct{}

// Pick implements Policy. It ranks nodes on their cached verdicts (see live),
// which equal math.Float64bits(Score()) for Available nodes.
func (*leastLoad) Pick(s *Snapshot, _ Key, dst []*Node) []*Node {
	lives := s.lives
	room := cap(dst) - len(dst)
	if room <= 0 || len(lives) == 0 {
		return dst
	}
	r := rand.Uint64()
	a, keyA := randomAvailable(lives, -1, uint32(r))
	if a < 0 {
		return dst
	}
	first := a
	if b, keyB := randomAvailable(lives, a, uint32(r>>32)); keyB < keyA {
		first = b // b >= 0: keyB is a real key
	}
	from := len(dst)
	dst = append(dst, s.nodes[first])
	if room == 1 {
		return dst
	}

	switch k := room - 1; {
	case k <= 3:
		a, b, c := uint64(unavailable), uint64(unavailable), uint64(unavailable)
		for i, lv := range lives {
			if key := lv.verdict.Load(); key != unavailable && i != first {
				a, b, c = top3(a, b, c, pack(key, i))
			}
		}
		return appendTop3(s.nodes, dst, k, a, b, c)
	case k <= maxRanked:
		r := newRanking(k)
		for i, lv := range lives {
			if key := lv.verdict.Load(); key != unavailable && i != first {
				if key = pack(key, i); key < r.limit {
					r.offer(key, i)
				}
			}
		}
		return r.appendTo(s.nodes, dst)
	default:
		return appendRanked(s.nodes, dst, from, func(i int) uint64 {
			if key := lives[i].verdict.Load(); key != unavailable {
				return pack(key, i)
			}
			return unavailable
		})
	}
}

// String returns the policy's config name.
func (*leastLoad) String() string { return "least_load" }

// randomTries is how many uniform draws randomAvailable makes before it
// falls back to a scan. With most nodes Available the first draw almost
// always succeeds; the scan bounds the cost when most are not.
const randomTries = 3

// randomAvailable returns a random Available node other than avoid, and its
// ranking key, or (-1, unavailable) when there is none. r is the first
// draw's randomness. Draws are uniform; when they keep hitting unavailable
// nodes it scans from a random start, which slightly favours nodes that
// follow a run of unavailable ones: an acceptable bias for a rare case, in
// exchange for a bounded cost and no allocation.
func randomAvailable(lives []*live, avoid int, r uint32) (int, uint64) {
	n := len(lives)
	for try := range randomTries {
		if try > 0 {
			r = rand.Uint32()
		}
		i := int(uint64(r) * uint64(n) >> 32) // uniform in [0, n)
		if i == avoid {
			continue
		}
		if key := lives[i].verdict.Load(); key != unavailable {
			return i, key
		}
	}
	i := rand.IntN(n)
	for range n {
		if key := lives[i].verdict.Load(); key != unavailable && i != avoid {
			return i, key
		}
		if i++; i == n {
			i = 0
		}
	}
	return -1, unavailable
}

// Interface guard.
var _ Policy = (*leastLoad)(nil)
