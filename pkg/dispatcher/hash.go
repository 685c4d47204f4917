package dispatcher

import (
	"math"
	"math/bits"
)

// hashPolicy is rendezvous (highest random weight) hashing on the call's Key.
// Every node draws a pseudo-random score for the key, mix(key ^ seed) with a
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
// computed bit for bit the same on every architecture. With equal
// weights the policy compares the integer draws directly, which ranks the
// same way (up to float rounding) at no floating-point cost.
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
	case room <= 3:
		// The two loops are hashRank written out, so that nothing
		// in them is a call and the three keys stay in registers.
		a, b, c := uint64(unavailable), uint64(unavailable), uint64(unavailable)
		lives := s.lives[:len(s.seeds)]
		if s.weighted {
			invWeight := s.invWeight[:len(s.seeds)]
			for i, seed := range s.seeds {
				if lives[i].verdict.Load() != unavailable {
					key := weightedRank(mix64(k.Hash^seed), invWeight[i])
					a, b, c = top3(a, b, c, pack(key, i))
				}
			}
		} else {
			for i, seed := range s.seeds {
				if lives[i].verdict.Load() != unavailable {
					a, b, c = top3(a, b, c, pack(^mix64(k.Hash^seed)>>1, i))
				}
			}
		}
		return appendTop3(s.nodes, dst, room, a, b, c)
	case room <= maxRanked:
		r := newRanking(room)
		for i, lv := range s.lives {
			if lv.verdict.Load() != unavailable {
				if key := pack(s.hashRank(k, i), i); key < r.limit {
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
			return pack(s.hashRank(k, i), i)
		})
	}
}

// String returns the policy's config name.
func (*hashPolicy) String() string { return "hash" }

// hashRank is node i's ranking key for k (lower ranks first).
func (s *Snapshot) hashRank(k Key, i int) uint64 {
	h := mix64(k.Hash ^ s.seeds[i])
	if s.weighted {
		return weightedRank(h, s.invWeight[i])
	}
	return ^h >> 1
}

// mix64 is the splitmix64 finalizer: a bijection on 64 bits in which every
// input bit affects every output bit, so that keys and seeds that differ in a
// few bits still give independent-looking scores.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
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
