package dispatcher

import (
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestNewValidates(t *testing.T) {
	cases := []struct {
		name   string
		modify func(specs []Spec)
		errs   []string // substrings; nil: valid
	}{
		{name: "valid", modify: func([]Spec) {}},
		{name: "empty ID", modify: func(s []Spec) { s[1].ID = "" }, errs: []string{"node #1: empty ID"}},
		{name: "duplicate ID", modify: func(s []Spec) { s[2].ID = "fs1" }, errs: []string{`node "fs1": duplicate ID (nodes #0 and #2)`}},
		{name: "weight 0", modify: func(s []Spec) { s[0].Weight = 0 }, errs: []string{`node "fs1": weight must be >= 1, got 0`}},
		{name: "negative max calls", modify: func(s []Spec) { s[0].MaxCalls = -1 }, errs: []string{`node "fs1": max_calls must be >= 0`}},
		{name: "no address", modify: func(s []Spec) { s[0].Addr = netip.AddrPort{} }, errs: []string{`node "fs1": invalid address`}},
		{name: "port 0", modify: func(s []Spec) { s[0].Addr = netip.MustParseAddrPort("10.0.0.1:0") }, errs: []string{`node "fs1": invalid address "10.0.0.1:0"`}},
		{name: "transport", modify: func(s []Spec) { s[0].Transport = "SCTP" }, errs: []string{`node "fs1": transport must be UDP, TCP or TLS, got "SCTP"`}},
		{name: "lower-case transport is fine", modify: func(s []Spec) { s[0].Transport = "tls" }},
		{
			name:   "every problem reported",
			modify: func(s []Spec) { s[0].Weight = 0; s[1].Transport = "" },
			errs:   []string{`"fs1": weight`, `"fs2": transport`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			specs := testSpecs(3)
			tc.modify(specs)
			d, err := New(must(NewPolicy("hash")), specs)
			if tc.errs == nil {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				for _, n := range d.Snapshot().Nodes() {
					if n.Spec.Transport != strings.ToUpper(n.Spec.Transport) {
						t.Errorf("transport %q not normalised", n.Spec.Transport)
					}
				}
				return
			}
			if err == nil {
				t.Fatal("New: no error")
			}
			for _, want := range tc.errs {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			// Update validates the same way and changes nothing.
			d = testDispatcher(t, "hash", testSpecs(3))
			if _, _, err := d.Update(specs); err == nil {
				t.Error("Update accepted what New rejected")
			}
			if d.Snapshot().Version() != 1 {
				t.Error("a failed Update published a snapshot")
			}
		})
	}
	if _, err := New(nil, testSpecs(1)); err == nil {
		t.Error("New(nil policy): no error")
	}
	if _, err := New(must(NewPolicy("hash")), testSpecs(maxNodes+1)); err == nil || !strings.Contains(err.Error(), "at most 65535") {
		t.Errorf("New with %d nodes: %v", maxNodes+1, err)
	}
}

func TestDispatcherBasics(t *testing.T) {
	d := testDispatcher(t, "weighted_round_robin", testSpecs(3))
	s := d.Snapshot()
	if s.Version() != 1 || len(s.Nodes()) != 3 || d.Node("fs2") != s.Node("fs2") || d.Node("nope") != nil {
		t.Fatalf("fresh dispatcher: version %d, nodes %v", s.Version(), ids(s.Nodes()))
	}
	for _, n := range s.Nodes() {
		if n.State() != StateUp || n.Active() != 0 || n.Load() != nil {
			t.Errorf("%s does not start up and idle", n.ID())
		}
	}
	if d.Policy().String() != "weighted_round_robin" {
		t.Errorf("Policy() = %s", d.Policy())
	}
	if !d.AnyAvailable() {
		t.Error("AnyAvailable() = false with all nodes up")
	}
	d.SetPolicy(must(NewPolicy("priority")))
	if d.Policy().String() != "priority" {
		t.Errorf("SetPolicy: Policy() = %s", d.Policy())
	}
	for _, n := range s.Nodes() {
		n.SetState(StateFull)
	}
	if d.AnyAvailable() {
		t.Error("AnyAvailable() = true with all nodes full")
	}
	if got := d.Pick(Key{}, make([]*Node, 0, 3)); len(got) != 0 {
		t.Errorf("Pick with nothing available = %v", ids(got))
	}

	empty := testDispatcher(t, "least_load", nil)
	if got := empty.Pick(Key{}, make([]*Node, 0, 3)); len(got) != 0 || empty.AnyAvailable() {
		t.Error("empty dispatcher picked something")
	}
}

func TestUpdate(t *testing.T) {
	d := testDispatcher(t, "least_load", testSpecs(4))
	var seen []*Snapshot
	d.OnChange(func(s *Snapshot) { seen = append(seen, s) })

	old := d.Snapshot()
	fs1, fs2, fs3, fs4 := old.Node("fs1"), old.Node("fs2"), old.Node("fs3"), old.Node("fs4")
	load := &Load{Sessions: 12, MaxSessions: 100}
	fs1.SetActive(5)
	fs1.AddInflight(2)
	fs1.SetLoad(load)
	fs1.SetState(StateFull)
	fs3.SetActive(9)
	fs4.SetState(StateDisabled)

	// fs1 moves and changes weight, fs2 is unchanged, fs3 and fs4 go, fs5
	// is new.
	specs := testSpecs(5)
	specs[0].Addr = netip.MustParseAddrPort("10.9.9.9:5080")
	specs[0].Weight = 3
	specs = slices.Delete(specs, 2, 4)
	added, removed, err := d.Update(specs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(added, []string{"fs5"}) || !slices.Equal(removed, []string{"fs3", "fs4"}) {
		t.Errorf("added %v removed %v", added, removed)
	}
	s := d.Snapshot()
	if s.Version() != 2 {
		t.Errorf("version %d, want 2", s.Version())
	}
	if len(seen) != 1 || seen[0] != s {
		t.Errorf("OnChange saw %d snapshots", len(seen))
	}
	if !slices.Equal(ids(s.Nodes()), []string{"fs1", "fs2", "fs5"}) {
		t.Errorf("Nodes() = %v", ids(s.Nodes()))
	}

	t.Run("live state survives a spec change", func(t *testing.T) {
		n := s.Node("fs1")
		if n == fs1 {
			t.Fatal("changed spec kept the old *Node")
		}
		if n.Spec.Weight != 3 || n.Spec.Addr != specs[0].Addr {
			t.Errorf("new spec not applied: %+v", n.Spec)
		}
		if n.Active() != 5 || n.Inflight() != 2 || n.Load() != load || n.State() != StateFull {
			t.Errorf("live state lost: active %d inflight %d load %v state %s", n.Active(), n.Inflight(), n.Load(), n.State())
		}
		// Old and new Node share the live state.
		n.AddActive(1)
		if fs1.Active() != 6 {
			t.Error("old and new Node do not share live state")
		}
		if s.Node("fs2") != fs2 {
			t.Error("unchanged spec got a new *Node")
		}
	})

	t.Run("retired nodes resolve but are never picked", func(t *testing.T) {
		for _, n := range []*Node{fs3, fs4} {
			if s.Node(n.ID()) != n {
				t.Errorf("Node(%s) = %v", n.ID(), s.Node(n.ID()))
			}
			if got := s.NodeBySource(n.Spec.Addr); got != n {
				t.Errorf("NodeBySource(%s) = %v, want %s", n.Spec.Addr, got, n.ID())
			}
			if n.State() != StateDraining {
				t.Errorf("%s: state %s, want draining", n.ID(), n.State())
			}
		}
		if fs3.Active() != 9 {
			t.Error("retiring lost the active count")
		}
		// fs3 carries calls, fs4 none: only fs3 shows in metrics and lists.
		if got := s.RetiredWithCalls(); !slices.Equal(got, []*Node{fs3}) {
			t.Errorf("RetiredWithCalls() = %v, want [fs3] (fs4: active %d, inflight %d)", ids(got), fs4.Active(), fs4.Inflight())
		}
		// Even forced Up, a retired node is not in the node set.
		fs3.SetState(StateUp)
		defer fs3.SetState(StateDraining)
		for _, name := range PolicyNames() {
			p := must(NewPolicy(name))
			for i := range 500 {
				for _, n := range p.Pick(s, randomKey(i), make([]*Node, 0, 5)) {
					if n == fs3 || n == fs4 {
						t.Fatalf("%s picked retired %s", name, n.ID())
					}
				}
			}
		}
	})

	t.Run("revival", func(t *testing.T) {
		added, removed, err := d.Update(testSpecs(5))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(added, []string{"fs3", "fs4"}) || len(removed) != 0 {
			t.Errorf("added %v removed %v", added, removed)
		}
		s := d.Snapshot()
		if s.Node("fs3") != fs3 {
			t.Error("revived node with unchanged spec is not the same *Node")
		}
		if fs3.State() != StateUp || fs3.Active() != 9 {
			t.Errorf("fs3 revived as %s with %d active, want up with 9", fs3.State(), fs3.Active())
		}
		// fs4 was disabled by an operator before it was removed.
		if fs4.State() != StateDisabled {
			t.Errorf("fs4 revived as %s, want disabled (its state before retirement)", fs4.State())
		}
		if !slices.Contains(s.Nodes(), fs3) || len(seen) != 2 || seen[1] != s {
			t.Error("revived node not selectable or observers not told")
		}
	})

	t.Run("retired node whose state changed meanwhile keeps it", func(t *testing.T) {
		d := testDispatcher(t, "least_load", testSpecs(2))
		n := d.Node("fs2")
		if _, _, err := d.Update(testSpecs(1)); err != nil {
			t.Fatal(err)
		}
		n.SetState(StateDown) // a late health result
		if _, _, err := d.Update(testSpecs(2)); err != nil {
			t.Fatal(err)
		}
		if n.State() != StateDown {
			t.Errorf("state %s, want down", n.State())
		}
	})

	t.Run("operator drain before removal survives revival", func(t *testing.T) {
		d := testDispatcher(t, "least_load", testSpecs(2))
		n := d.Node("fs2")
		n.SetState(StateDraining)
		for _, specs := range [][]Spec{testSpecs(1), testSpecs(2)} {
			if _, _, err := d.Update(specs); err != nil {
				t.Fatal(err)
			}
		}
		if n.State() != StateDraining {
			t.Errorf("state %s, want draining", n.State())
		}
	})

	t.Run("down before removal comes back up", func(t *testing.T) {
		d := testDispatcher(t, "least_load", testSpecs(2))
		n := d.Node("fs2")
		n.SetState(StateDown)
		for _, specs := range [][]Spec{testSpecs(1), testSpecs(2)} {
			if _, _, err := d.Update(specs); err != nil {
				t.Fatal(err)
			}
		}
		if n.State() != StateUp {
			t.Errorf("state %s, want up (health judges it again)", n.State())
		}
	})

	t.Run("changed MaxCalls applies to selection", func(t *testing.T) {
		d := testDispatcher(t, "least_load", testSpecs(1))
		d.Node("fs1").SetActive(10)
		specs := testSpecs(1)
		specs[0].MaxCalls = 10
		if _, _, err := d.Update(specs); err != nil {
			t.Fatal(err)
		}
		if got := d.Pick(Key{}, make([]*Node, 0, 1)); len(got) != 0 {
			t.Errorf("picked %v at MaxCalls", ids(got))
		}
	})
}

func TestNodeBySource(t *testing.T) {
	specs := testSpecs(5)
	specs[0].Addr = netip.MustParseAddrPort("10.0.0.1:5060")
	specs[1].Addr = netip.MustParseAddrPort("10.0.0.1:5080") // same host, second profile
	specs[2].Addr = netip.MustParseAddrPort("[2001:db8::7]:5060")
	specs[3].Addr = netip.MustParseAddrPort("[::ffff:10.0.0.4]:5060") // configured mapped
	specs[4].Addr = netip.MustParseAddrPort("[fe80::1]:5060")
	d := testDispatcher(t, "least_load", specs)

	cases := []struct {
		src  string
		want string // "" for nil
	}{
		{"10.0.0.1:5060", "fs1"},
		{"10.0.0.1:5080", "fs2"},
		{"10.0.0.1:41234", "fs1"}, // TCP ephemeral port: first node on the IP
		{"[::ffff:10.0.0.1]:5080", "fs2"},
		{"[::ffff:10.0.0.1]:41234", "fs1"},
		{"[2001:db8::7]:5060", "fs3"},
		{"[2001:db8::7]:1234", "fs3"},
		{"10.0.0.4:5060", "fs4"},
		{"[::ffff:10.0.0.4]:9999", "fs4"},
		{"[fe80::1%eth0]:5060", "fs5"}, // zone from the socket
		{"10.0.0.99:5060", ""},
		{"[2001:db8::8]:5060", ""},
	}
	check := func(t *testing.T, s *Snapshot) {
		t.Helper()
		for _, tc := range cases {
			got := s.NodeBySource(netip.MustParseAddrPort(tc.src))
			if (got == nil && tc.want != "") || (got != nil && got.ID() != tc.want) {
				t.Errorf("NodeBySource(%s) = %v, want %q", tc.src, got, tc.want)
			}
		}
	}
	check(t, d.Snapshot())

	t.Run("retired nodes included, live nodes first", func(t *testing.T) {
		// fs1 retires; fs9 takes over its exact address.
		next := slices.Clone(specs[1:])
		fs9 := testSpecs(1)[0]
		fs9.ID, fs9.Addr = "fs9", specs[0].Addr
		next = append(next, fs9)
		if _, _, err := d.Update(next); err != nil {
			t.Fatal(err)
		}
		s := d.Snapshot()
		if got := s.NodeBySource(specs[0].Addr); got == nil || got.ID() != "fs9" {
			t.Errorf("shared address resolves to %v, want the live fs9", got)
		}
		if _, _, err := d.Update(specs[1:]); err != nil {
			t.Fatal(err)
		}
		s = d.Snapshot()
		if got := s.NodeBySource(specs[0].Addr); got == nil || got.ID() != "fs9" && got.ID() != "fs1" {
			t.Errorf("retired address resolves to %v", got)
		}
		if got := s.NodeBySource(specs[3].Addr); got == nil || got.ID() != "fs4" {
			t.Errorf("live node lost: %v", got)
		}
	})
}

// TestConcurrentPickAndUpdate runs picks from several goroutines while other
// goroutines flip states, move counters, publish load reports, reload the
// config and switch policies. Run it with -race; it also checks that every
// pick's candidates are distinct and within capacity.
func TestConcurrentPickAndUpdate(t *testing.T) {
	d := testDispatcher(t, "least_load", testSpecs(16))
	configs := [][]Spec{testSpecs(16), testSpecs(12), withWeights(testSpecs(20), 3, 1, 2), withPriorities(testSpecs(16), 2, 2, 1, 1)}
	var pols []Policy
	for _, name := range PolicyNames() {
		pols = append(pols, must(NewPolicy(name)))
	}
	var observed int
	d.OnChange(func(*Snapshot) { observed++ }) // Update serialises observers

	stop := make(chan struct{})
	var pickers sync.WaitGroup
	for g := range 4 {
		pickers.Add(1)
		go func() {
			defer pickers.Done()
			dst := make([]*Node, 0, 3+g%2*20) // some beyond the on-stack ranking
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				got := d.Pick(randomKey(i), dst[:0])
				if len(got) > cap(dst) {
					t.Errorf("%d candidates for cap %d", len(got), cap(dst))
					return
				}
				for j, n := range got {
					if slices.Contains(got[:j], n) {
						t.Errorf("duplicate candidate %s in %v", n.ID(), ids(got))
						return
					}
				}
				for _, n := range got {
					n.AddInflight(1)
				}
				for _, n := range got {
					n.AddInflight(-1)
				}
				_ = d.AnyAvailable()
				_ = d.Snapshot().NodeBySource(netip.MustParseAddrPort("10.0.0.3:5060"))
			}
		}()
	}

	var writers sync.WaitGroup
	const rounds = 300
	writers.Add(3)
	go func() { // health
		defer writers.Done()
		r := rand.New(rand.NewPCG(1, 1))
		states := []State{StateUp, StateUp, StateDown, StateFull, StateDraining, StateDisabled}
		for range rounds * 20 {
			nodes := d.Snapshot().Nodes()
			n := nodes[r.IntN(len(nodes))]
			n.SetState(states[r.IntN(len(states))])
			n.SetLoad(&Load{Sessions: r.Int64N(500), MaxSessions: 500, IdleCPU: r.Float64() * 100})
			n.AddActive(r.Int64N(3) - 1)
		}
	}()
	go func() { // reloads
		defer writers.Done()
		for i := range rounds {
			if _, _, err := d.Update(configs[i%len(configs)]); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() { // operator switching policies
		defer writers.Done()
		for i := range rounds * 10 {
			d.SetPolicy(pols[i%len(pols)])
		}
	}()
	writers.Wait()
	close(stop)
	pickers.Wait()

	if observed != rounds {
		t.Errorf("observers called %d times, want %d", observed, rounds)
	}
	// Quiet now: every node's cached verdict must match its inputs.
	for _, n := range d.Snapshot().Nodes() {
		lv := n.live
		if want := lv.computeVerdict(); lv.verdict.Load() != want {
			t.Errorf("%s: stale verdict after writers stopped", n.ID())
		}
		if n.pickable() != n.Available() {
			t.Errorf("%s: pickable %v, Available %v", n.ID(), n.pickable(), n.Available())
		}
	}
}
