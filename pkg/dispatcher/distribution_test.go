package dispatcher

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// firstPicks counts the first choices of n picks.
func firstPicks(tb testing.TB, p Policy, s *Snapshot, n int, key func(i int) Key) map[string]int {
	tb.Helper()
	counts := map[string]int{}
	dst := make([]*Node, 0, 3)
	for i := range n {
		got := p.Pick(s, key(i), dst)
		if len(got) == 0 {
			tb.Fatalf("pick %d: no candidate", i)
		}
		counts[got[0].ID()]++
	}
	return counts
}

func anyKey(int) Key { return Key{} }

func randomKey(i int) Key { return KeyFromString(fmt.Sprintf("call-%d@test", i)) }

// checkShares asserts each node's share of picks is within tol of its
// weight's share, relative to that share (0.02: ±2%).
func checkShares(tb testing.TB, counts map[string]int, weights map[string]int, total int, tol float64) {
	tb.Helper()
	sum := 0
	for _, w := range weights {
		sum += w
	}
	for id, w := range weights {
		want := float64(w) / float64(sum)
		got := float64(counts[id]) / float64(total)
		if math.Abs(got-want) > tol*want {
			tb.Errorf("%s: share %.4f, want %.4f ± %.1f%% (counts %v)", id, got, want, 100*tol, counts)
		}
	}
	for id := range counts {
		if _, ok := weights[id]; !ok {
			tb.Errorf("%s picked %d times, want never", id, counts[id])
		}
	}
}

func TestWRRDistribution(t *testing.T) {
	p := must(NewPolicy("weighted_round_robin"))
	t.Run("equal weights spread exactly", func(t *testing.T) {
		s := testSnapshot(t, testSpecs(7))
		const n = 7*1000 + 3
		counts := firstPicks(t, p, s, n, anyKey)
		for id, c := range counts {
			if c < n/7 || c > n/7+1 {
				t.Errorf("%s: %d picks, want %d or %d", id, c, n/7, n/7+1)
			}
		}
	})
	t.Run("weights 1:2:3", func(t *testing.T) {
		s := testSnapshot(t, withWeights(testSpecs(3), 1, 2, 3))
		counts := firstPicks(t, p, s, 60000, anyKey)
		checkShares(t, counts, map[string]int{"fs1": 1, "fs2": 2, "fs3": 3}, 60000, 0.02)
	})
	t.Run("smooth schedule", func(t *testing.T) {
		// nginx's example: weights 5, 1, 1 give a a b a c a a, not
		// a a a a a b c.
		s := testSnapshot(t, withWeights(testSpecs(3), 5, 1, 1))
		dst := make([]*Node, 0, 1)
		var got []string
		for range 14 {
			got = append(got, p.Pick(s, Key{}, dst)[0].ID())
		}
		want := []string{"fs1", "fs1", "fs2", "fs1", "fs3", "fs1", "fs1"}
		if !slices.Equal(got, append(want, want...)) {
			t.Errorf("got %v, want %v twice", got, want)
		}
	})
	t.Run("node down: its share goes to the others by weight", func(t *testing.T) {
		s := testSnapshot(t, withWeights(testSpecs(4), 1, 2, 3, 4))
		s.Node("fs4").SetState(StateDown)
		counts := firstPicks(t, p, s, 60000, anyKey)
		checkShares(t, counts, map[string]int{"fs1": 1, "fs2": 2, "fs3": 3}, 60000, 0.02)
	})
	t.Run("every other node down: the rest share evenly", func(t *testing.T) {
		// The down nodes' slots recur every 4 picks and 4 is a multiple
		// of the 2 Available weights: the redistribution must not lock
		// onto one node.
		s := testSnapshot(t, testSpecs(4))
		s.Node("fs2").SetState(StateDown)
		s.Node("fs4").SetState(StateDown)
		counts := firstPicks(t, p, s, 40000, anyKey)
		checkShares(t, counts, map[string]int{"fs1": 1, "fs3": 1}, 40000, 0.001)
	})
	t.Run("heavy node down: others share by weight", func(t *testing.T) {
		// fs1 holds 100 of 103 schedule slots: most picks fall back to
		// pickWeighted.
		s := testSnapshot(t, withWeights(testSpecs(3), 100, 1, 2))
		s.Node("fs1").SetState(StateDown)
		counts := firstPicks(t, p, s, 30000, anyKey)
		checkShares(t, counts, map[string]int{"fs2": 1, "fs3": 2}, 30000, 0.05)
	})
	t.Run("huge weights are scaled into a bounded schedule", func(t *testing.T) {
		s := testSnapshot(t, withWeights(testSpecs(3), 1_000_003, 2_000_011, 3_000_017))
		if l := len(s.wrr.order); l > maxScheduleLen+3 {
			t.Fatalf("schedule length %d", l)
		}
		counts := firstPicks(t, p, s, 60000, anyKey)
		checkShares(t, counts, map[string]int{"fs1": 1, "fs2": 2, "fs3": 3}, 60000, 0.001)
	})
}

func TestPriorityDistribution(t *testing.T) {
	p := must(NewPolicy("priority"))
	s := testSnapshot(t, withWeights(withPriorities(testSpecs(4), 1, 1, 1, 2), 1, 2, 3, 1))
	counts := firstPicks(t, p, s, 60000, anyKey)
	// fs4 is in the standby group: never a first choice while group 1 is up.
	checkShares(t, counts, map[string]int{"fs1": 1, "fs2": 2, "fs3": 3}, 60000, 0.02)

	for _, id := range []string{"fs1", "fs2", "fs3"} {
		s.Node(id).SetState(StateDown)
	}
	counts = firstPicks(t, p, s, 100, anyKey)
	checkShares(t, counts, map[string]int{"fs4": 1}, 100, 0)
}

func TestLeastLoadDistribution(t *testing.T) {
	p := must(NewPolicy("least_load"))
	t.Run("equal scores spread evenly", func(t *testing.T) {
		s := testSnapshot(t, testSpecs(10))
		const n = 100000
		counts := firstPicks(t, p, s, n, anyKey)
		for id, c := range counts {
			if math.Abs(float64(c)-n/10) > 0.1*n/10 {
				t.Errorf("%s: %d first picks, want %d ± 10%%", id, c, n/10)
			}
		}
		if len(counts) != 10 {
			t.Errorf("only %d of 10 nodes picked", len(counts))
		}
	})
	t.Run("loaded node gets far fewer first picks", func(t *testing.T) {
		s := testSnapshot(t, testSpecs(10))
		s.Node("fs3").SetActive(900)
		for _, n := range s.Nodes() {
			if n.ID() != "fs3" {
				n.SetActive(rand.Int64N(100))
			}
		}
		const n = 50000
		counts := firstPicks(t, p, s, n, anyKey)
		// The highest score never wins a pair: fs3 is never first.
		if counts["fs3"] != 0 {
			t.Errorf("fs3 (highest score) got %d first picks", counts["fs3"])
		}
	})
	t.Run("two choices: lower score wins more, not always", func(t *testing.T) {
		// Scores 0, 0.1, ..., 0.9: with two random choices the rank-r
		// node (0-based, n nodes) wins with probability 2(n-1-r)/(n(n-1)).
		s := testSnapshot(t, testSpecs(10))
		for i, n := range s.Nodes() {
			n.SetActive(int64(100 * i))
		}
		const total = 90000
		counts := firstPicks(t, p, s, total, anyKey)
		for i, n := range s.Nodes() {
			want := 2 * float64(9-i) / 90
			got := float64(counts[n.ID()]) / total
			if math.Abs(got-want) > 0.01 {
				t.Errorf("%s: share %.4f, want %.4f", n.ID(), got, want)
			}
		}
	})
	t.Run("in-flight INVITEs steer new calls away", func(t *testing.T) {
		s := testSnapshot(t, testSpecs(2))
		a, b := s.Node("fs1"), s.Node("fs2")
		dst := make([]*Node, 0, 1)
		// Each pick adds an in-flight INVITE to the node picked, as the
		// proxy does: the two nodes must alternate within one call.
		for range 1000 {
			p.Pick(s, Key{}, dst)[0].AddInflight(1)
		}
		if d := a.Inflight() - b.Inflight(); d < -1 || d > 1 {
			t.Errorf("in-flight %d vs %d", a.Inflight(), b.Inflight())
		}
	})
}

func TestHashDistribution(t *testing.T) {
	p := must(NewPolicy("hash"))
	const keys = 20000

	t.Run("stable, even, minimal movement", func(t *testing.T) {
		s := testSnapshot(t, testSpecs(10))
		before := make([][]*Node, keys)
		counts := map[string]int{}
		for i := range keys {
			before[i] = p.Pick(s, randomKey(i), make([]*Node, 0, 2))
			counts[before[i][0].ID()]++
		}
		for id, c := range counts {
			if math.Abs(float64(c)-keys/10) > 0.1*keys/10 {
				t.Errorf("%s holds %d keys, want %d ± 10%%", id, c, keys/10)
			}
		}
		for i := range keys {
			if again := p.Pick(s, randomKey(i), make([]*Node, 0, 2)); again[0] != before[i][0] || again[1] != before[i][1] {
				t.Fatalf("key %d: %v then %v", i, ids(before[i]), ids(again))
			}
		}

		down := s.Node("fs4")
		down.SetState(StateDown)
		moved := 0
		movedTo := map[string]int{}
		for i := range keys {
			now := p.Pick(s, randomKey(i), make([]*Node, 0, 1))[0]
			switch {
			case before[i][0] == down:
				moved++
				movedTo[now.ID()]++
				// Its keys go to what was their first fallback.
				if now != before[i][1] {
					t.Fatalf("key %d: was on fs4, moved to %s, want its fallback %s", i, now.ID(), before[i][1].ID())
				}
			case now != before[i][0]:
				t.Fatalf("key %d moved from %s to %s though its node is up", i, before[i][0].ID(), now.ID())
			}
		}
		if moved != counts["fs4"] {
			t.Errorf("moved %d keys, fs4 held %d", moved, counts["fs4"])
		}
		// A failed node's calls spread over all the others rather than
		// landing on a neighbour: each node's score for a key is
		// independent of the others'.
		weights := map[string]int{}
		for _, n := range s.Nodes() {
			if n != down {
				weights[n.ID()] = 1
			}
		}
		checkShares(t, movedTo, weights, moved, 0.3)

		down.SetState(StateUp)
		for i := range keys {
			if now := p.Pick(s, randomKey(i), make([]*Node, 0, 1))[0]; now != before[i][0] {
				t.Fatalf("key %d: on %s after fs4 came back, was %s", i, now.ID(), before[i][0].ID())
			}
		}
	})

	t.Run("adding a node moves only keys to it", func(t *testing.T) {
		before := testSnapshot(t, testSpecs(10))
		after := testSnapshot(t, testSpecs(11))
		for i := range keys {
			k := randomKey(i)
			was := p.Pick(before, k, make([]*Node, 0, 1))[0].ID()
			now := p.Pick(after, k, make([]*Node, 0, 1))[0].ID()
			if was != now && now != "fs11" {
				t.Fatalf("key %d moved from %s to %s", i, was, now)
			}
		}
	})

	t.Run("weights 1:2:3", func(t *testing.T) {
		s := testSnapshot(t, withWeights(testSpecs(3), 1, 2, 3))
		const n = 60000
		counts := firstPicks(t, p, s, n, randomKey)
		checkShares(t, counts, map[string]int{"fs1": 1, "fs2": 2, "fs3": 3}, n, 0.03)
	})

	t.Run("weighted, many nodes", func(t *testing.T) {
		specs := testSpecs(20)
		weights := map[string]int{}
		for i := range specs {
			specs[i].Weight = 1 + i%4
			weights[specs[i].ID] = specs[i].Weight
		}
		s := testSnapshot(t, specs)
		const n = 100000
		counts := firstPicks(t, p, s, n, randomKey)
		checkShares(t, counts, weights, n, 0.08)
	})
}

func TestWeightedRank(t *testing.T) {
	// The interpolated log2 is close to the real one...
	for i := range 100000 {
		m := 1 + float64(i)/100000
		f := uint64((m - 1) * 0x1p64)
		if i == 0 {
			f = 0
		}
		if d := math.Abs(log2FracForTest(f) - math.Log2(m)); d > 3e-6 {
			t.Fatalf("log2(%v): error %g", m, d)
		}
	}
	// ...and -log2(u) is monotone in h across segments and powers of two,
	// so equal weights rank like the integer path.
	r := rand.New(rand.NewPCG(1, 2))
	for range 200000 {
		h1 := r.Uint64() >> r.IntN(64)
		h2 := h1 + r.Uint64N(1<<r.IntN(40)+1)
		if h2 < h1 {
			continue
		}
		if weightedRank(h1, 1) < weightedRank(h2, 1) {
			t.Fatalf("not monotone: h %#x -> %v, h %#x -> %v", h1,
				math.Float64frombits(weightedRank(h1, 1)), h2, math.Float64frombits(weightedRank(h2, 1)))
		}
	}
	// Reference values, so that a change to the function (which would
	// move keys between instances running different versions) is noticed.
	for _, tc := range []struct {
		h    uint64
		want float64
	}{
		{1 << 63, 1},
		{1 << 62, 2},
		{0xC000000000000000, 2 - math.Log2(3)},
		{0, 65},
	} {
		got := math.Float64frombits(weightedRank(tc.h, 1))
		if math.Abs(got-tc.want) > 3e-6 {
			t.Errorf("weightedRank(%#x) = %v, want %v", tc.h, got, tc.want)
		}
	}
}

// log2FracForTest is the log2(1.f) weightedRank computes.
func log2FracForTest(f uint64) float64 {
	// weightedRank(h) = lz+1 - log2(1.f); with h = 1<<63 | f>>1, lz = 0.
	return 1 - math.Float64frombits(weightedRank(1<<63|f>>1, 1))
}
