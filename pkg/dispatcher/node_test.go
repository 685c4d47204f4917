package dispatcher

import (
	"math"
	"strings"
	"testing"
)

func TestStateStringAndParse(t *testing.T) {
	for _, tc := range []struct {
		s      State
		name   string
		accept bool
	}{
		{StateUp, "up", true},
		{StateDown, "down", false},
		{StateFull, "full", false},
		{StateDraining, "draining", false},
		{StateDisabled, "disabled", false},
	} {
		if got := tc.s.String(); got != tc.name {
			t.Errorf("%d.String() = %q, want %q", int(tc.s), got, tc.name)
		}
		if got := tc.s.AcceptsNewCalls(); got != tc.accept {
			t.Errorf("%s.AcceptsNewCalls() = %v", tc.s, got)
		}
		for _, in := range []string{tc.name, strings.ToUpper(tc.name)} {
			if got, err := ParseState(in); err != nil || got != tc.s {
				t.Errorf("ParseState(%q) = %v, %v; want %v", in, got, err, tc.s)
			}
		}
	}
	if got := State(42).String(); got != "State(42)" {
		t.Errorf("State(42).String() = %q", got)
	}
	_, err := ParseState("sick")
	if err == nil || !strings.Contains(err.Error(), `"sick"`) || !strings.Contains(err.Error(), "draining") {
		t.Errorf("ParseState(sick) error = %v, want it to quote the input and list valid states", err)
	}
}

func TestNodeCounters(t *testing.T) {
	n := testSnapshot(t, testSpecs(1)).Node("fs1")
	if got := n.AddActive(2); got != 2 {
		t.Errorf("AddActive(2) = %d", got)
	}
	if got := n.AddActive(-5); got != 0 {
		t.Errorf("AddActive below zero = %d, want 0", got)
	}
	if got := n.AddInflight(-1); got != 0 {
		t.Errorf("AddInflight(-1) from 0 = %d, want 0", got)
	}
	if got := n.AddInflight(3); got != 3 || n.Inflight() != 3 {
		t.Errorf("AddInflight(3) = %d, Inflight() = %d", got, n.Inflight())
	}
	n.SetActive(-4)
	if n.Active() != 0 {
		t.Errorf("SetActive(-4): Active() = %d, want 0", n.Active())
	}
	n.SetActive(7)
	if n.Active() != 7 {
		t.Errorf("SetActive(7): Active() = %d", n.Active())
	}
	if old := n.SetState(StateFull); old != StateUp || n.State() != StateFull {
		t.Errorf("SetState: old %v, now %v", old, n.State())
	}
	l := &Load{Sessions: 5}
	n.SetLoad(l)
	if n.Load() != l {
		t.Error("Load() does not return what SetLoad stored")
	}
	n.SetLoad(nil)
	if n.Load() != nil {
		t.Error("SetLoad(nil) did not clear")
	}
}

func TestNodeAvailable(t *testing.T) {
	specs := testSpecs(2)
	specs[0].MaxCalls = 3
	s := testSnapshot(t, specs)
	capped, free := s.Node("fs1"), s.Node("fs2")
	check := func(n *Node, want bool) {
		t.Helper()
		if got := n.Available(); got != want {
			t.Errorf("%s: Available() = %v, want %v (state %s, active %d, inflight %d)", n.ID(), got, want, n.State(), n.Active(), n.Inflight())
		}
		// The cached verdict policies read must agree.
		if got := n.pickable(); got != want {
			t.Errorf("%s: pickable() = %v, want %v", n.ID(), got, want)
		}
	}
	check(capped, true)
	capped.SetActive(2)
	check(capped, true)
	capped.AddInflight(1)
	check(capped, false) // 2+1 = MaxCalls
	capped.AddInflight(-1)
	check(capped, true)
	free.SetActive(1 << 40)
	check(free, true) // no cap
	for _, st := range []State{StateDown, StateFull, StateDraining, StateDisabled} {
		free.SetState(st)
		check(free, false)
	}
	free.SetState(StateUp)
	check(free, true)
}

func TestScore(t *testing.T) {
	cases := []struct {
		name             string
		weight, maxCalls int
		active, inflight int64
		load             *Load
		want             float64
	}{
		{name: "idle, no load", weight: 1, want: 0},
		{name: "local calls over default capacity", weight: 1, active: 100, inflight: 50, want: 150.0 / 1000},
		{name: "local cap", weight: 1, maxCalls: 200, active: 50, want: 0.25},
		{name: "weight divides", weight: 4, maxCalls: 100, active: 100, want: 0.25},
		{
			name:   "ESL sessions above local count, plus our in-flight",
			weight: 1, active: 10, inflight: 5,
			load: &Load{Sessions: 300, MaxSessions: 600, IdleCPU: 100},
			want: 305.0 / 600,
		},
		{
			name:   "local count above a lagging ESL report",
			weight: 1, active: 400, inflight: 20,
			load: &Load{Sessions: 100, MaxSessions: 1000, IdleCPU: 100},
			want: 420.0 / 1000,
		},
		{
			name: "CPU counts half", weight: 1,
			load: &Load{MaxSessions: 1000, IdleCPU: 20},
			want: 0.5 * 0.8,
		},
		{
			name: "MaxCalls wins over Max-Sessions", weight: 2, maxCalls: 100, active: 50,
			load: &Load{Sessions: 0, MaxSessions: 1000, IdleCPU: 50},
			want: (0.5 + 0.25) / 2,
		},
		{
			name: "unknown Max-Sessions falls back to 1000", weight: 1,
			load: &Load{Sessions: 100, IdleCPU: 100},
			want: 0.1,
		},
		{
			name: "CPU out of range is clamped", weight: 1,
			load: &Load{IdleCPU: 150},
			want: 0,
		},
		{
			name: "negative idle clamps busy to 1", weight: 1,
			load: &Load{IdleCPU: -10},
			want: 0.5,
		},
		{
			name: "NaN idle counts as not busy", weight: 1,
			load: &Load{IdleCPU: math.NaN()},
			want: 0,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			specs := testSpecs(1)
			specs[0].Weight, specs[0].MaxCalls = tc.weight, tc.maxCalls
			n := testSnapshot(t, specs).Node("fs1")
			n.SetActive(tc.active)
			n.AddInflight(tc.inflight)
			n.SetLoad(tc.load)
			got := n.Score()
			if math.Abs(got-tc.want) > 1e-12 {
				t.Errorf("Score() = %v, want %v", got, tc.want)
			}
			if n.Available() {
				if v := n.live.verdict.Load(); v != math.Float64bits(got) {
					t.Errorf("cached verdict %v, Score() %v", math.Float64frombits(v), got)
				}
			}
		})
	}
}

func TestKeyFromString(t *testing.T) {
	// The value is part of the wire contract between instances: it must
	// never change. xxhash64 of "" is a published test vector.
	if got := KeyFromString(""); got.Hash != 0xef46db3751d8e999 {
		t.Errorf(`KeyFromString("") = %#x`, got.Hash)
	}
	if KeyFromString("a@b") == KeyFromString("a@c") {
		t.Error("different Call-IDs hash the same")
	}
}
