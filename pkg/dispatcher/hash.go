package dispatcher

import (
	"math"
	"math/bits"
)

// hashPolicy is rendezvous (highest random weight) hashing on the call's Key.
// Every node draws a pseudo-random score for the key, mum(key ^ seed) with a
// per-node seed (xxhash of its ID, precomputed per snapshot); the node with
// the highest score among the Available ones is the first choice, and the
// others follow in descending score.
//
// The score depends only on the key and the node's ID, so: the same key maps
// to the same node on every instance and across restarts while the set of
// Available nodes is the same; when a node goes out only the keys it held
// move (to their second choice, which was already their first fallback); and
// when it comes back only those keys return. The fallbacks for a key are
// stable too.
//
// With unequal weights the score is weighted rendezvous hashing: the node
// minimising -ln(u)/Weight wins, u being the key's uniform draw for that node,
// which gives each node a share proportional to its Weight. The logarithm
// comes from a table and a linear interpolation, with no division, and is
// computed bit for bit the same on every architecture.
//
// Pick touches every node, so its cost is per node and kept to a few
// instructions (DESIGN.md's target is 100 ns for 64 nodes): one multiply for
// the score and compare-and-move for the top three, no branch that depends
// on the score. The logarithm costs more than all of that, so it is taken
// only where it can matter: -ln(u)/Weight falls as u rises, so among nodes
// of equal Weight the integer scores already give the order, and only the
// best three of each weight class (Snapshot.hashClasses) are weighed.
//
// Ranks within a weight class come from the integer scores and across
// classes from the packed weighed keys; the two orders can differ only for
// weighed ranks closer than 2^-36 (pack's precision), about once in 10^9
// picks, and then only in which of two near-equal nodes comes first.
//
// Use it when calls that share a Key (Call-ID, or a configured header such
// as a conference ID) must land on the same node without shared state.
type hashPolicy struct{}

// Pick implements Policy.
func (*hashPolicy) Pick(s *Snapshot, k Key, dst []*Node) []*Node {
	room := cap(dst) - len(dst)
	switch {
	case room <= 0 || len(s.nodes) == 0:
		return dst
	case room <= 3 && len(s.hashClasses) == 1:
		a, b, c := hashTop3(k, s.hashSlots)
		return appendTop3(s.nodes, dst, room, ^a, ^b, ^c)
	case room <= 3 && len(s.hashClasses) <= maxWeighedClasses:
		x, y, z := s.weighedTop3(k)
		return appendTop3(s.nodes, dst, room, x, y, z)
	case room <= 3:
		// Many distinct weights: weigh every node.
		x, y, z := uint64(unavailable), uint64(unavailable), uint64(unavailable)
		invWeight := s.invWeight[:len(s.seeds)]
		lives := s.lives[:len(s.seeds)]
		for i, seed := range s.seeds {
			if lives[i].verdict.Load() != unavailable {
				x, y, z = top3(x, y, z, weightedKey(hashScore(k, seed, i), invWeight[i]))
			}
		}
		return appendTop3(s.nodes, dst, room, x, y, z)
	case room <= maxRanked:
		r := newRanking(room)
		for i, lv := range s.lives {
			if lv.verdict.Load() != unavailable {
				if key := s.hashRank(k, i); key < r.limit {
					r.offer(key, i)
				}
			}
		}
		return r.appendTo(s.nodes, dst)
	default:
		return appendRanked(s.nodes, dst, len(dst), func(i int) uint64 {
			if s.lives[i].verdict.Load() == unavailable {
				return unavailable
			}
			return s.hashRank(k, i)
		})
	}
}

// String returns the policy's config name.
func (*hashPolicy) String() string { return "hash" }

// hashSlot is what the hash policy reads of one node: its seed, its live
// state, and its index in Snapshot.nodes.
type hashSlot struct {
	seed uint64
	lv   *live
	idx  int
}

// hashClass is a run of Snapshot.hashSlots whose nodes share one Weight: the
// slots before end and from the previous class's end.
type hashClass struct {
	end       int
	invWeight float64
}

// hashScore is node idx's score for k, with the index in its low idxBits
// bits (stored as idxMask^idx, so that a lower index wins a tie and a score
// is never 0: maxNodes is idxMask, so idx never equals it). Higher scores
// rank first; weightedKey and scoreIdx read a score back.
func hashScore(k Key, seed uint64, idx int) uint64 {
	return (mum(k.Hash^seed) | idxMask) ^ uint64(idx)
}

// scoreIdx is the node index a hashScore carries.
func scoreIdx(score uint64) int { return int(score&idxMask ^ idxMask) }

// hashTop3 returns the three highest scores among the Available nodes of
// slots, highest first; 0 fills the places of missing nodes. It is the
// loop that Pick's cost is made of: a multiply and top3's compare-and-move
// (written for highest-first) per node.
func hashTop3(k Key, slots []hashSlot) (a, b, c uint64) {
	for i := range slots {
		sl := &slots[i]
		if sl.lv.verdict.Load() != unavailable {
			x := hashScore(k, sl.seed, sl.idx)
			a, b, c = max(a, x), max(b, min(a, x)), max(c, min(b, x))
		}
	}
	return a, b, c
}

// maxWeighedClasses bounds the weight classes weighedTop3 handles, on the
// stack. Weights are a handful of small integers in practice; a pool with
// more distinct weights than this weighs every node, which costs about
// twice as much.
const maxWeighedClasses = 8

// weighedTop3 returns the packed ranking keys of the three best Available
// nodes, best first, for a snapshot with 2 to maxWeighedClasses weight
// classes: each class's best three by integer score, then those weighed.
// All of them are weighed, so that no branch depends on a score.
func (s *Snapshot) weighedTop3(k Key) (x, y, z uint64) {
	// invWeight repeats each class's weight beside its three scores: read
	// from hashClasses[j/3] instead, the second loop measured 5-10 % slower.
	var scores [3 * maxWeighedClasses]uint64
	var invWeight [3 * maxWeighedClasses]float64
	from := 0
	for j, cl := range s.hashClasses {
		scores[3*j], scores[3*j+1], scores[3*j+2] = hashTop3(k, s.hashSlots[from:cl.end])
		invWeight[3*j], invWeight[3*j+1], invWeight[3*j+2] = cl.invWeight, cl.invWeight, cl.invWeight
		from = cl.end
	}
	x, y, z = unavailable, unavailable, unavailable
	for j, score := range scores[:3*len(s.hashClasses)] {
		r := weightedKey(score, invWeight[j])
		if score == 0 { // fewer than three Available in the class
			r = unavailable
		}
		x, y, z = top3(x, y, z, r)
	}
	return x, y, z
}

// hashRank is node i's packed ranking key for k (lower ranks first), the
// key every path of Pick ranks on.
func (s *Snapshot) hashRank(k Key, i int) uint64 {
	score := hashScore(k, s.seeds[i], i)
	if len(s.hashClasses) == 1 {
		return ^score
	}
	return weightedKey(score, s.invWeight[i])
}

// weightedKey is the packed ranking key of a node's score: weightedRank
// with the node index (scoreIdx) in the low bits.
func weightedKey(score uint64, invWeight float64) uint64 {
	return pack(weightedRank(score, invWeight), scoreIdx(score))
}

// mum mixes x by a 64×64→128-bit multiply by an odd constant, folding the
// high half onto the low: every input bit reaches the top of the result in
// one multiply, and the top bits are what rank. Keys are already xxhash
// values and seeds xxhash of node IDs, so one round is enough to make
// different nodes' scores for one key look independent; a stronger mixer
// (splitmix64's finalizer) cost 40 % more per Pick.
func mum(x uint64) uint64 {
	hi, lo := bits.Mul64(x, 0x9e3779b97f4a7c15)
	return hi ^ lo
}

// weightedRank returns -log2(u)/weight as an order-preserving uint64, for
// u = h/2^64. Ranking by the lowest value is weighted rendezvous hashing. It
// is monotone in h (larger h, lower or equal rank).
func weightedRank(h uint64, invWeight float64) uint64 {
	// u = 2^-(lz+1) · 1.f, so -log2(u) = lz+1 - log2(1.f): the leading
	// zeros give the integer part, log2Table the rest. (h = 0 gives 65.)
	lz := bits.LeadingZeros64(h)
	f := h << (lz + 1) // fraction bits after the leading 1, left-aligned
	seg := &log2Table[f>>(64-log2Bits)]
	t := float64(int64(f<<log2Bits>>11)) * 0x1p-53 // position within the segment, [0, 1)
	e := float64(lz+1) - (seg[0] + float64(seg[1]*t))
	// e > 0, so its bit pattern orders like its value.
	return math.Float64bits(float64(e * invWeight))
}

// log2Bits is how many leading fraction bits select a log2Table segment.
const log2Bits = 8

// log2Table holds, for each segment j of [1, 2), log2(1 + j/256) and the
// rise to the next segment's start, for linear interpolation. The
// interpolated log2 has an absolute error below 3e-6, far finer than needed
// to share keys by weight; what matters more is that it is monotone and
// continuous (the last segment ends at exactly 1) and that every
// architecture computes it bit for bit the same: the entries come from
// atanhSeries rather than math.Log2, and every product is explicitly
// rounded so that no compiler may fuse it into an FMA. Instances must agree
// on where a key goes.
var log2Table = func() (t [1 << log2Bits][2]float64) {
	at := func(j int) float64 {
		return atanhSeries(1+float64(j)/(1<<log2Bits)) / atanhSeries(2)
	}
	for j := range t {
		t[j] = [2]float64{at(j), at(j+1) - at(j)}
	}
	return t
}()

// atanhSeries returns ln(m)/2 = atanh(s) = s + s³/3 + s⁵/5 + s⁷/7 + s⁹/9,
// s = (m-1)/(m+1), for m in [1, 2] (s <= 1/3, relative error below 1e-6).
// It only builds log2Table.
func atanhSeries(m float64) float64 {
	s := (m - 1) / (m + 1)
	s2 := float64(s * s)
	p := 1.0 / 9
	p = float64(p*s2) + 1.0/7
	p = float64(p*s2) + 1.0/5
	p = float64(p*s2) + 1.0/3
	p = float64(p*s2) + 1
	return float64(s * p)
}

// Interface guard.
var _ Policy = (*hashPolicy)(nil)
