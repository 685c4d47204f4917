package dispatcher

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// testSpecs returns n valid specs fs1..fsN with weight 1, at 10.0.x.y:5060.
func testSpecs(n int) []Spec {
	specs := make([]Spec, n)
	for i := range specs {
		addr := netip.AddrFrom4([4]byte{10, 0, byte((i + 1) / 250), byte((i+1)%250 + 1)})
		specs[i] = Spec{
			ID:        fmt.Sprintf("fs%d", i+1),
			Host:      addr.String(),
			Addr:      netip.AddrPortFrom(addr, 5060),
			Transport: "UDP",
			Weight:    1,
		}
	}
	return specs
}

// testDispatcher returns a Dispatcher over specs with the named policy.
func testDispatcher(tb testing.TB, policy string, specs []Spec) *Dispatcher {
	tb.Helper()
	p, err := NewPolicy(policy)
	if err != nil {
		tb.Fatal(err)
	}
	d, err := New(p, specs)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

// testSnapshot returns a fresh snapshot over specs; every node is Up with no
// calls and no load.
func testSnapshot(tb testing.TB, specs []Spec) *Snapshot {
	tb.Helper()
	return testDispatcher(tb, "least_load", specs).Snapshot()
}

// ids returns the IDs of nodes, for messages and comparisons.
func ids(nodes []*Node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.ID()
	}
	return out
}

// checkCandidates asserts what every policy promises: Pick kept the prefix,
// appended only Available nodes, each once, and stopped at cap(dst) or when
// the Available nodes ran out.
func checkCandidates(tb testing.TB, s *Snapshot, prefix, got []*Node, capacity int) {
	tb.Helper()
	if len(got) < len(prefix) || !slices.Equal(got[:len(prefix)], prefix) {
		tb.Fatalf("prefix not kept: got %v, prefix %v", ids(got), ids(prefix))
	}
	if cap(got) != capacity {
		tb.Fatalf("Pick reallocated dst: cap %d, want %d", cap(got), capacity)
	}
	added := got[len(prefix):]
	seen := map[*Node]bool{}
	for _, n := range added {
		if !n.Available() {
			tb.Errorf("candidate %s is not available (state %s, active %d, inflight %d, max %d)",
				n.ID(), n.State(), n.Active(), n.Inflight(), n.Spec.MaxCalls)
		}
		if seen[n] {
			tb.Errorf("candidate %s appears twice in %v", n.ID(), ids(added))
		}
		seen[n] = true
	}
	available := 0
	for _, n := range s.Nodes() {
		if n.Available() {
			available++
		}
	}
	if want := min(capacity-len(prefix), available); len(added) != want {
		tb.Errorf("got %d candidates %v, want %d (%d available, room %d)", len(added), ids(added), want, available, capacity-len(prefix))
	}
}

// pickCase is one row of the per-policy tables.
type pickCase struct {
	name  string
	specs []Spec            // nil: testSpecs(5)
	setup func(s *Snapshot) // flips states, sets counters
	cap   int               // capacity of dst
	pre   int               // how many nodes dst already holds
	// check, when set, asserts policy-specific order on the appended
	// candidates; the common invariants are always checked.
	check func(t *testing.T, s *Snapshot, got []*Node)
}

// commonCases are the state flips every policy must honour.
var commonCases = []pickCase{
	{name: "all up", cap: 3},
	{name: "all up, cap 1", cap: 1},
	{name: "cap 0 returns nothing", cap: 0},
	{
		name: "down full draining disabled are skipped",
		setup: func(s *Snapshot) {
			s.Node("fs1").SetState(StateDown)
			s.Node("fs2").SetState(StateFull)
			s.Node("fs3").SetState(StateDraining)
			s.Node("fs4").SetState(StateDisabled)
		},
		cap:   3,
		check: wantIDs("fs5"),
	},
	{
		name: "nothing available",
		setup: func(s *Snapshot) {
			for _, n := range s.Nodes() {
				n.SetState(StateDown)
			}
		},
		cap: 3,
	},
	{
		name:  "max calls reached is skipped",
		specs: withMaxCalls(testSpecs(3), 2, 2, 0),
		setup: func(s *Snapshot) {
			s.Node("fs1").SetActive(1)
			s.Node("fs1").AddInflight(1) // 1+1 = 2: full
			s.Node("fs2").SetActive(1)   // 1 < 2: fine
			s.Node("fs3").SetActive(1e6) // no cap
		},
		cap:   5,
		check: wantSet("fs2", "fs3"),
	},
	{name: "cap larger than available", cap: 8},
	{name: "dst already holds a node", cap: 3, pre: 1},
	{
		name:  "more candidates than the on-stack ranking holds",
		specs: testSpecs(maxRanked + 10),
		setup: func(s *Snapshot) { s.Node("fs7").SetState(StateDown) },
		cap:   maxRanked + 10,
	},
}

func withMaxCalls(specs []Spec, max ...int) []Spec {
	for i, m := range max {
		specs[i].MaxCalls = m
	}
	return specs
}

func withPriorities(specs []Spec, prio ...int) []Spec {
	for i, p := range prio {
		specs[i].Priority = p
	}
	return specs
}

func withWeights(specs []Spec, w ...int) []Spec {
	for i, x := range w {
		specs[i].Weight = x
	}
	return specs
}

// wantIDs asserts the exact candidate list.
func wantIDs(want ...string) func(*testing.T, *Snapshot, []*Node) {
	return func(t *testing.T, _ *Snapshot, got []*Node) {
		t.Helper()
		if !slices.Equal(ids(got), want) {
			t.Errorf("got %v, want %v", ids(got), want)
		}
	}
}

// wantSet asserts the candidates are exactly these IDs, in any order.
func wantSet(want ...string) func(*testing.T, *Snapshot, []*Node) {
	return func(t *testing.T, _ *Snapshot, got []*Node) {
		t.Helper()
		g := ids(got)
		slices.Sort(g)
		w := slices.Clone(want)
		slices.Sort(w)
		if !slices.Equal(g, w) {
			t.Errorf("got %v, want %v in any order", ids(got), want)
		}
	}
}

// runPickCases runs the common cases and the policy's own on a fresh
// snapshot each.
func runPickCases(t *testing.T, policy string, own []pickCase) {
	t.Helper()
	p, err := NewPolicy(policy)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range append(slices.Clone(commonCases), own...) {
		t.Run(tc.name, func(t *testing.T) {
			specs := tc.specs
			if specs == nil {
				specs = testSpecs(5)
			}
			s := testSnapshot(t, slices.Clone(specs))
			if tc.setup != nil {
				tc.setup(s)
			}
			capacity := tc.cap
			dst := make([]*Node, 0, capacity)
			// A prefix node taken from the end of the list, as a caller
			// retrying with a partly filled dst would have.
			for i := range tc.pre {
				dst = append(dst, s.Nodes()[len(s.Nodes())-1-i])
			}
			prefix := slices.Clone(dst)
			// Several picks: round-robin cursors and random draws move.
			for range 7 {
				got := p.Pick(s, Key{Hash: 42}, dst)
				if tc.pre == 0 {
					checkCandidates(t, s, prefix, got, capacity)
				} else {
					// The prefix node may be picked again: Pick
					// promises distinct candidates among those it
					// appends, not versus dst's prefix.
					checkAppended(t, prefix, got, capacity)
				}
				if tc.check != nil {
					tc.check(t, s, got[len(prefix):])
				}
			}
		})
	}
}

// checkAppended is checkCandidates for a dst that already held nodes.
func checkAppended(tb testing.TB, prefix, got []*Node, capacity int) {
	tb.Helper()
	if !slices.Equal(got[:len(prefix)], prefix) || cap(got) != capacity || len(got) != capacity {
		tb.Fatalf("got %v (cap %d), want prefix %v and %d entries", ids(got), cap(got), ids(prefix), capacity)
	}
	added := got[len(prefix):]
	for i, n := range added {
		if !n.Available() || slices.Contains(added[:i], n) {
			tb.Errorf("bad candidate %s in %v", n.ID(), ids(added))
		}
	}
}

func TestWRRPick(t *testing.T) {
	runPickCases(t, "weighted_round_robin", nil)
	// A fresh snapshot's cursor starts at 0, and the schedule for equal
	// weights is fs1..fs5: the first choice follows it, fs2's slots go to the
	// others by weight, and the fallbacks rotate from just after the first
	// choice.
	t.Run("sequence", func(t *testing.T) {
		s := testSnapshot(t, testSpecs(5))
		s.Node("fs2").SetState(StateDown)
		p := must(NewPolicy("weighted_round_robin"))
		want := [][]string{
			{"fs1", "fs3", "fs4"},
			{"fs3", "fs4", "fs5"}, // fs2's slot (c=1): by weight, 1 mod 4 -> fs3
			{"fs3", "fs4", "fs5"},
			{"fs4", "fs5", "fs1"},
			{"fs5", "fs1", "fs3"},
			{"fs1", "fs3", "fs4"},
			{"fs4", "fs5", "fs1"}, // fs2's slot (c=6): 6 mod 4 -> fs4
		}
		dst := make([]*Node, 0, 3)
		for i, w := range want {
			if got := ids(p.Pick(s, Key{}, dst)); !slices.Equal(got, w) {
				t.Errorf("pick %d: got %v, want %v", i, got, w)
			}
		}
	})
}

func TestLeastLoadPick(t *testing.T) {
	scored := func(s *Snapshot) {
		for i, n := range s.Nodes() {
			n.SetActive(int64(100 * (len(s.Nodes()) - i))) // fs1 busiest
		}
	}
	runPickCases(t, "least_load", []pickCase{
		{
			name:  "fallbacks in ascending score",
			specs: testSpecs(8),
			setup: scored,
			cap:   8,
			check: func(t *testing.T, _ *Snapshot, got []*Node) {
				t.Helper()
				for i := 2; i < len(got); i++ {
					if got[i-1].Score() > got[i].Score() {
						t.Errorf("fallbacks not ascending: %v", ids(got))
					}
				}
				if got[0].ID() == "fs1" {
					t.Errorf("the busiest node was a first choice: %v", ids(got))
				}
			},
		},
		{
			name:  "busiest node is never first",
			specs: testSpecs(2),
			setup: scored,
			cap:   2,
			check: wantIDs("fs2", "fs1"),
		},
		{
			name:  "weight halves the score",
			specs: withWeights(testSpecs(2), 1, 2),
			setup: func(s *Snapshot) {
				s.Node("fs1").SetActive(100)
				s.Node("fs2").SetActive(150) // 0.15/2 < 0.1
			},
			cap:   2,
			check: wantIDs("fs2", "fs1"),
		},
		{
			name:  "ESL load counts",
			specs: testSpecs(3),
			setup: func(s *Snapshot) {
				s.Node("fs1").SetLoad(&Load{Sessions: 900, MaxSessions: 1000, IdleCPU: 50})
				s.Node("fs2").SetLoad(&Load{Sessions: 10, MaxSessions: 1000, IdleCPU: 0}) // CPU-bound
				s.Node("fs3").SetLoad(&Load{Sessions: 10, MaxSessions: 1000, IdleCPU: 99})
			},
			cap: 3,
			check: func(t *testing.T, _ *Snapshot, got []*Node) {
				t.Helper()
				if got[0].ID() == "fs1" || got[2].ID() != "fs1" {
					t.Errorf("got %v, want fs1 last", ids(got))
				}
			},
		},
	})
}

func TestHashPick(t *testing.T) {
	runPickCases(t, "hash", []pickCase{
		{
			name:  "candidates in descending score",
			specs: testSpecs(10),
			setup: func(s *Snapshot) { s.Node("fs3").SetState(StateDown) },
			cap:   9,
			check: checkHashOrder,
		},
		{
			name:  "weighted: candidates in descending score",
			specs: withWeights(testSpecs(10), 1, 2, 3, 4, 5, 1, 2, 3, 4, 5),
			cap:   10,
			check: checkHashOrder,
		},
	})
	t.Run("all ranking paths agree", func(t *testing.T) {
		// top3 (cap <= 3), ranking (<= maxRanked) and appendRanked
		// must give the same order, or a key's node would depend on
		// max_attempts.
		// Equal weights, a few weight classes, and more classes than
		// weighedTop3 takes.
		for _, specs := range [][]Spec{
			testSpecs(40),
			withWeights(testSpecs(40), 1, 2, 3, 4, 5),
			withWeights(testSpecs(40), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
		} {
			s := testSnapshot(t, specs)
			s.Node("fs5").SetState(StateDown)
			p := must(NewPolicy("hash"))
			for key := range uint64(300) {
				k := Key{Hash: key * 0x9e3779b97f4a7c15}
				long := p.Pick(s, k, make([]*Node, 0, 30))
				for _, c := range []int{1, 2, 3, 5, maxRanked} {
					if got := p.Pick(s, k, make([]*Node, 0, c)); !slices.Equal(got, long[:c]) {
						t.Fatalf("cap %d: %v, cap 30 starts %v", c, ids(got), ids(long[:c]))
					}
				}
			}
		}
	})
	t.Run("same key same candidates", func(t *testing.T) {
		s := testSnapshot(t, testSpecs(10))
		p := must(NewPolicy("hash"))
		for key := range uint64(100) {
			k := KeyFromString(fmt.Sprint("call-", key))
			a := ids(p.Pick(s, k, make([]*Node, 0, 3)))
			// A snapshot built elsewhere from the same config (another
			// instance) must agree.
			b := ids(p.Pick(testSnapshot(t, testSpecs(10)), k, make([]*Node, 0, 3)))
			if !slices.Equal(a, b) {
				t.Fatalf("key %d: %v then %v", key, a, b)
			}
		}
	})
}

// checkHashOrder asserts hash candidates come in rank order and that no
// Available node outranks the last candidate.
func checkHashOrder(t *testing.T, s *Snapshot, got []*Node) {
	t.Helper()
	k := Key{Hash: 42}
	rank := func(n *Node) uint64 { return s.hashRank(k, slices.Index(s.Nodes(), n)) }
	for i := 1; i < len(got); i++ {
		if rank(got[i-1]) > rank(got[i]) {
			t.Errorf("not in descending score: %v", ids(got))
		}
	}
	for _, n := range s.Nodes() {
		if n.Available() && !slices.Contains(got, n) && rank(n) < rank(got[len(got)-1]) {
			t.Errorf("%s outranks candidates %v", n.ID(), ids(got))
		}
	}
}

func TestPriorityPick(t *testing.T) {
	groups := func() []Spec { return withPriorities(testSpecs(5), 10, 10, 20, 20, 30) }
	runPickCases(t, "priority", []pickCase{
		{
			name:  "lowest group first, then spill in order",
			specs: groups(),
			cap:   5,
			check: func(t *testing.T, _ *Snapshot, got []*Node) {
				t.Helper()
				g := ids(got)
				slices.Sort(g[0:2])
				slices.Sort(g[2:4])
				if !slices.Equal(g, []string{"fs1", "fs2", "fs3", "fs4", "fs5"}) {
					t.Errorf("got %v, want {fs1 fs2} {fs3 fs4} fs5", ids(got))
				}
			},
		},
		{
			name:  "first group down spills to the next",
			specs: groups(),
			setup: func(s *Snapshot) {
				s.Node("fs1").SetState(StateDown)
				s.Node("fs2").SetState(StateFull)
			},
			cap:   2,
			check: wantSet("fs3", "fs4"),
		},
		{
			name:  "partly available group still first",
			specs: groups(),
			setup: func(s *Snapshot) { s.Node("fs1").SetState(StateDown) },
			cap:   3,
			check: func(t *testing.T, _ *Snapshot, got []*Node) {
				t.Helper()
				if got[0].ID() != "fs2" || got[1].Spec.Priority != 20 || got[2].Spec.Priority != 20 {
					t.Errorf("got %v, want fs2 then group 20", ids(got))
				}
			},
		},
		{
			name:  "config order does not matter, priority does",
			specs: withPriorities(testSpecs(3), 3, 2, 1),
			cap:   3,
			check: wantIDs("fs3", "fs2", "fs1"),
		},
	})
}

func TestNewPolicy(t *testing.T) {
	for _, name := range PolicyNames() {
		p, err := NewPolicy(name)
		if err != nil {
			t.Fatalf("NewPolicy(%q): %v", name, err)
		}
		if p.String() != name {
			t.Errorf("NewPolicy(%q).String() = %q", name, p.String())
		}
	}
	if got := PolicyNames()[0]; got != "least_load" {
		t.Errorf("default policy listed first = %q, want least_load", got)
	}
	_, err := NewPolicy("round_robin")
	if err == nil {
		t.Fatal("unknown policy: no error")
	}
	for _, want := range append(PolicyNames(), `"round_robin"`) {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// TestPickAllocs proves Pick allocates nothing, for every policy, in the
// cases that take different code paths.
func TestPickAllocs(t *testing.T) {
	cases := []struct {
		name  string
		specs []Spec
		setup func(s *Snapshot)
		cap   int
	}{
		{name: "all up", specs: testSpecs(64), cap: 3},
		{name: "cap 1", specs: testSpecs(64), cap: 1},
		{name: "weighted and loaded", specs: withWeights(testSpecs(64), 1, 2, 3, 4), cap: 3, setup: func(s *Snapshot) {
			for i, n := range s.Nodes() {
				n.SetActive(int64(i))
				n.SetLoad(&Load{Sessions: int64(i), MaxSessions: 100, IdleCPU: 30})
			}
		}},
		{name: "most down", specs: testSpecs(64), cap: 3, setup: func(s *Snapshot) {
			for i, n := range s.Nodes() {
				if i != 40 {
					n.SetState(StateDown)
				}
			}
		}},
		{name: "none available", specs: testSpecs(64), cap: 3, setup: func(s *Snapshot) {
			for _, n := range s.Nodes() {
				n.SetState(StateFull)
			}
		}},
		{name: "beyond on-stack ranking", specs: testSpecs(64), cap: maxRanked + 4},
	}
	for _, name := range PolicyNames() {
		p := must(NewPolicy(name))
		for _, tc := range cases {
			t.Run(name+"/"+tc.name, func(t *testing.T) {
				s := testSnapshot(t, tc.specs)
				if tc.setup != nil {
					tc.setup(s)
				}
				dst := make([]*Node, 0, tc.cap)
				k := Key{Hash: 7}
				if n := testing.AllocsPerRun(200, func() {
					dst = p.Pick(s, k, dst[:0])
					k.Hash++
				}); n != 0 {
					t.Errorf("%v allocs per Pick, want 0", n)
				}
			})
		}
	}
	t.Run("Dispatcher.Pick", func(t *testing.T) {
		d := testDispatcher(t, "least_load", testSpecs(64))
		dst := make([]*Node, 0, 3)
		if n := testing.AllocsPerRun(200, func() { dst = d.Pick(Key{}, dst[:0]) }); n != 0 {
			t.Errorf("%v allocs per Pick, want 0", n)
		}
	})
}

func TestRanking(t *testing.T) {
	r := newRanking(3)
	for i, key := range []uint64{5, 3, 9, 3, 1, 7, 3} {
		if key < r.limit {
			r.offer(key, i)
		}
	}
	got := r.e[:r.n]
	want := []ranked{{1, 4}, {3, 1}, {3, 3}}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v (lowest keys, ties to the earlier index)", got, want)
	}
}

// must returns v, panicking on err; for fixtures that cannot fail.
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
