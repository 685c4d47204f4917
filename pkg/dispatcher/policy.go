package dispatcher

import (
	"fmt"
	"slices"
	"strings"
)

// Policy chooses nodes for a new call. Pick appends candidates to dst — the
// first choice, then the fallbacks the proxy tries in order when a branch
// fails — and stops when len(dst) == cap(dst) or when no more Available
// nodes exist. It returns only nodes that were Available when it looked, each
// at most once, and an empty addition when none is: the caller then answers
// 503 (see the package doc).
//
// Pick runs once per new call on every core at once: it must not allocate,
// block, lock or do I/O. It reads the Snapshot's precomputed indexes and the
// nodes' live atomics, nothing else. Policies hold no per-snapshot state, so
// one Policy value serves any Snapshot and survives reloads.
type Policy interface {
	Pick(s *Snapshot, k Key, dst []*Node) []*Node
	String() string
}

// policies is the registry, in the order PolicyNames lists them (the
// default first).
var policies = []struct {
	name string
	new  func() Policy
}{
	{"least_load", func() Policy { return new(leastLoad) }},
	{"weighted_round_robin", func() Policy { return new(wrr) }},
	{"hash", func() Policy { return new(hashPolicy) }},
	{"priority", func() Policy { return new(priority) }},
}

// NewPolicy returns the policy registered under name, as written in the
// config key dispatcher.policy. An unknown name is an error that quotes it
// and lists the valid names.
func NewPolicy(name string) (Policy, error) {
	for _, p := range policies {
		if p.name == name {
			return p.new(), nil
		}
	}
	return nil, fmt.Errorf("dispatcher: unknown policy %q (valid: %s)", name, strings.Join(PolicyNames(), ", "))
}

// PolicyNames returns the names NewPolicy accepts, the default
// (least_load) first.
func PolicyNames() []string {
	names := make([]string, len(policies))
	for i, p := range policies {
		names[i] = p.name
	}
	return names
}

// Ranking policies (least_load's fallbacks, hash) keep the k best of n
// nodes. Three paths, by how many candidates the caller wants; all rank on
// the same packed keys (see pack), so they agree on the order:
//
//   - k <= 3, the common case (failover.max_attempts defaults to 3): top3,
//     three registers updated with min/max and no data-dependent branch.
//     With 64 nodes a branchy insertion mispredicts about a dozen times per
//     pick, which costs more than the arithmetic.
//   - k <= maxRanked: ranking, an insertion-sorted array on the stack.
//   - beyond: appendRanked, one pass per candidate.

// maxRanked bounds how many candidates ranking keeps on the stack.
const maxRanked = 16

// Ranking keys carry the node's index in their low idxBits bits, so that a
// key alone says which node it is and keys of different nodes never tie (the
// lower index wins what would have been a tie). Zeroing those bits costs a
// hash score 16 of its 64 bits and a float key a relative precision of
// 2^-36, both far below anything that matters. It is also why a node set
// holds at most maxNodes nodes (one less than idxBits can count, so that a
// hash score, which stores idxMask^idx, is never 0).
const (
	idxBits  = 16
	idxMask  = 1<<idxBits - 1
	maxNodes = idxMask
)

// pack returns key with node index i in its low bits. key must be below
// unavailable, and the result is too.
func pack(key uint64, i int) uint64 {
	return key&^idxMask | uint64(i)
}

// top3 inserts x into a <= b <= c, keeping the three lowest. Keys are
// packed, so all distinct; the min/max compile to conditional moves.
func top3(a, b, c, x uint64) (uint64, uint64, uint64) {
	return min(a, x), min(b, max(a, x)), min(c, max(b, x))
}

// appendTop3 appends the nodes of up to k (<= 3) packed keys to dst, best
// first, stopping at the first unused slot.
func appendTop3(nodes, dst []*Node, k int, a, b, c uint64) []*Node {
	keys := [3]uint64{a, b, c}
	for _, key := range keys[:k] {
		if key == unavailable {
			break
		}
		dst = append(dst, nodes[key&idxMask])
	}
	return dst
}

// ranked is a node index and its ranking key; lower keys rank first.
type ranked struct {
	key uint64
	idx int
}

// ranking keeps the k lowest keys offered, sorted, in a fixed array so that
// it lives on the stack. limit is the key an offer must beat: unavailable
// (above every real key) until k keys are held, then the worst one held.
// Callers test key < r.limit before calling offer, which keeps the common
// case — a node that does not make the cut — to one compare. Offering in
// index order and requiring a strictly lower key sends ties to the earlier
// node, deterministically.
type ranking struct {
	n, k  int
	limit uint64
	e     [maxRanked]ranked
}

func newRanking(k int) ranking {
	return ranking{k: k, limit: unavailable}
}

// offer inserts a key the caller checked is below r.limit.
func (r *ranking) offer(key uint64, idx int) {
	if r.n == r.k {
		r.n--
	}
	i := r.n
	for i > 0 && r.e[i-1].key > key {
		r.e[i] = r.e[i-1]
		i--
	}
	r.e[i] = ranked{key, idx}
	if r.n++; r.n == r.k {
		r.limit = r.e[r.n-1].key
	}
}

// appendTo appends the ranked nodes to dst, best first.
func (r *ranking) appendTo(nodes, dst []*Node) []*Node {
	for _, e := range r.e[:r.n] {
		dst = append(dst, nodes[e.idx])
	}
	return dst
}

// appendRanked is the path for callers that want more than maxRanked
// candidates: one pass over nodes per candidate, O(n·k). key returns a
// node's ranking key, or unavailable. Nodes already in dst[from:] are
// skipped, which keeps candidates distinct even when keys change between
// passes (least-load keys do).
func appendRanked(nodes, dst []*Node, from int, key func(i int) uint64) []*Node {
	for len(dst) < cap(dst) {
		best, bestKey := -1, uint64(unavailable)
		for i := range nodes {
			if k := key(i); k < bestKey && !slices.Contains(dst[from:], nodes[i]) {
				best, bestKey = i, k
			}
		}
		if best < 0 {
			break
		}
		dst = append(dst, nodes[best])
	}
	return dst
}
