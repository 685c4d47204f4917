package session_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/session"
	"github.com/sipbalancer/sipbalancer/pkg/session/storetest"
)

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) session.Store {
		// A short sweep interval so that the sweeper runs during the suite.
		return session.NewMemory(session.MemoryOptions{SweepInterval: 50 * time.Millisecond})
	})
}

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// activeRecorder keeps per-node counts from OnActive deltas, as the
// dispatcher does, and remembers whether any count ever went negative.
type activeRecorder struct {
	mu       sync.Mutex
	counts   map[string]int
	events   []string
	negative []string
}

func newActiveRecorder() *activeRecorder {
	return &activeRecorder{counts: map[string]int{}}
}

func (r *activeRecorder) OnActive(nodeID string, delta int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.counts[nodeID] += delta
	r.events = append(r.events, fmt.Sprintf("%s%+d", nodeID, delta))
	if r.counts[nodeID] < 0 {
		r.negative = append(r.negative, fmt.Sprintf("%s=%d after event %d", nodeID, r.counts[nodeID], len(r.events)))
	}
}

// nonZero returns the counts that are not zero, in the shape of ActiveByNode.
func (r *activeRecorder) nonZero() map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]int{}
	for node, n := range r.counts {
		if n != 0 {
			out[node] = n
		}
	}
	return out
}

func (r *activeRecorder) Events() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

func (r *activeRecorder) requireNeverNegative(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	require.Empty(t, r.negative, "an active count went negative")
}

// fixture is a Memory on a fake clock with a recorder on OnActive. Its
// sweeper is too slow to run during a test; tests sweep with SweepNow.
type fixture struct {
	m     *session.Memory
	clock *fakeClock
	rec   *activeRecorder
}

func newFixture(t *testing.T, opts session.MemoryOptions) *fixture {
	t.Helper()
	f := &fixture{clock: newFakeClock(), rec: newActiveRecorder()}
	opts.Now = f.clock.Now
	opts.OnActive = f.rec.OnActive
	if opts.SweepInterval == 0 {
		opts.SweepInterval = time.Hour
	}
	f.m = session.NewMemory(opts)
	t.Cleanup(func() { assert.NoError(t, f.m.Close()) })
	return f
}

const (
	earlyTTL  = 5 * time.Minute
	dialogTTL = 12 * time.Hour
	linger    = 32 * time.Second
)

// step is one action on a fixture.
type step func(t *testing.T, f *fixture)

func bind(callID, node string) step {
	return func(t *testing.T, f *fixture) {
		t.Helper()
		require.NoError(t, f.m.Bind(context.Background(), session.Binding{CallID: callID, NodeID: node}, earlyTTL))
	}
}

func confirm(callID, node string) step {
	return func(t *testing.T, f *fixture) {
		t.Helper()
		require.NoError(t, f.m.Confirm(context.Background(), callID, node, dialogTTL))
	}
}

func touch(callID string) step {
	return func(t *testing.T, f *fixture) {
		t.Helper()
		require.NoError(t, f.m.Touch(context.Background(), callID, dialogTTL))
	}
}

func release(callID string) step {
	return func(t *testing.T, f *fixture) {
		t.Helper()
		require.NoError(t, f.m.Release(context.Background(), callID, linger))
	}
}

func releaseMissing(callID string) step {
	return func(t *testing.T, f *fixture) {
		t.Helper()
		require.ErrorIs(t, f.m.Release(context.Background(), callID, linger), session.ErrNotFound)
	}
}

func lookupMissing(callID string) step {
	return func(t *testing.T, f *fixture) {
		t.Helper()
		_, err := f.m.Lookup(context.Background(), callID)
		require.ErrorIs(t, err, session.ErrNotFound)
	}
}

func advance(d time.Duration) step {
	return func(_ *testing.T, f *fixture) { f.clock.Advance(d) }
}

func sweep() step {
	return func(_ *testing.T, f *fixture) { session.SweepNow(f.m) }
}

func TestMemoryOnActive(t *testing.T) {
	tests := []struct {
		name   string
		steps  []step
		events []string       // OnActive calls, in order
		active map[string]int // final counts and ActiveByNode (after a final sweep)
	}{
		{
			name:   "confirm twice counts once",
			steps:  []step{bind("c1", "a"), confirm("c1", "a"), confirm("c1", "a")},
			events: []string{"a+1"},
			active: map[string]int{"a": 1},
		},
		{
			name:   "confirm without bind counts",
			steps:  []step{confirm("c1", "a"), confirm("c2", "a"), confirm("c3", "b")},
			events: []string{"a+1", "a+1", "b+1"},
			active: map[string]int{"a": 2, "b": 1},
		},
		{
			name:   "confirm to another node moves the count",
			steps:  []step{confirm("c1", "a"), confirm("c1", "b")},
			events: []string{"a+1", "a-1", "b+1"},
			active: map[string]int{"b": 1},
		},
		{
			name:   "rebind to another node moves the count",
			steps:  []step{bind("c1", "a"), confirm("c1", "a"), bind("c1", "b"), confirm("c1", "b")},
			events: []string{"a+1", "a-1", "b+1"},
			active: map[string]int{"b": 1},
		},
		{
			name:   "rebind to the same node leaves confirmed",
			steps:  []step{confirm("c1", "a"), bind("c1", "a")},
			events: []string{"a+1", "a-1"},
			active: map[string]int{},
		},
		{
			name:   "early bindings do not count",
			steps:  []step{bind("c1", "a"), bind("c1", "b"), release("c1")},
			events: nil,
			active: map[string]int{},
		},
		{
			name:   "release decrements once",
			steps:  []step{confirm("c1", "a"), release("c1"), release("c1"), advance(linger), sweep(), releaseMissing("c1")},
			events: []string{"a+1", "a-1"},
			active: map[string]int{},
		},
		{
			name:   "touch keeps the count",
			steps:  []step{confirm("c1", "a"), touch("c1"), touch("c1")},
			events: []string{"a+1"},
			active: map[string]int{"a": 1},
		},
		{
			name:   "expiry decrements once when swept",
			steps:  []step{confirm("c1", "a"), advance(dialogTTL), lookupMissing("c1"), sweep(), sweep()},
			events: []string{"a+1", "a-1"},
			active: map[string]int{},
		},
		{
			name:   "expiry found by a write decrements once",
			steps:  []step{confirm("c1", "a"), advance(dialogTTL), releaseMissing("c1"), releaseMissing("c1"), sweep()},
			events: []string{"a+1", "a-1"},
			active: map[string]int{},
		},
		{
			name:   "rebind after expiry",
			steps:  []step{confirm("c1", "a"), advance(dialogTTL + time.Second), bind("c1", "b"), sweep()},
			events: []string{"a+1", "a-1"},
			active: map[string]int{},
		},
		{
			name:   "confirm after expiry counts again",
			steps:  []step{confirm("c1", "a"), advance(dialogTTL), confirm("c1", "a"), sweep()},
			events: []string{"a+1", "a-1", "a+1"},
			active: map[string]int{"a": 1},
		},
		{
			name:   "confirm after release counts again",
			steps:  []step{confirm("c1", "a"), release("c1"), confirm("c1", "a")},
			events: []string{"a+1", "a-1", "a+1"},
			active: map[string]int{"a": 1},
		},
		{
			name: "many calls on many nodes",
			steps: []step{
				confirm("c1", "a"), confirm("c2", "a"), confirm("c3", "b"), bind("c4", "b"),
				release("c2"), confirm("c4", "b"), confirm("c3", "a"), release("c4"), advance(time.Hour), touch("c1"),
				advance(dialogTTL - time.Minute), sweep(),
			},
			events: []string{"a+1", "a+1", "b+1", "a-1", "b+1", "b-1", "a+1", "b-1", "a-1"},
			active: map[string]int{"a": 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, session.MemoryOptions{})
			for _, s := range tt.steps {
				s(t, f)
			}
			session.SweepNow(f.m)
			assert.Equal(t, tt.events, f.rec.Events())
			assert.Equal(t, tt.active, f.rec.nonZero())
			assert.Equal(t, tt.active, f.m.ActiveByNode())
			f.rec.requireNeverNegative(t)
		})
	}
}

// TestMemoryOnActiveConcurrent hammers a few Call-IDs from many goroutines,
// so that changes of one binding race, and checks that the counts kept from
// OnActive never go negative and settle at what the store holds.
func TestMemoryOnActiveConcurrent(t *testing.T) {
	rec := newActiveRecorder()
	onActive := func(nodeID string, delta int) {
		// Yield, so that a delivery overtaken by a later one would show.
		runtime.Gosched()
		rec.OnActive(nodeID, delta)
	}
	m := session.NewMemory(session.MemoryOptions{Shards: 4, OnActive: onActive, SweepInterval: time.Millisecond})
	t.Cleanup(func() { assert.NoError(t, m.Close()) })
	ctx := context.Background()
	nodes := []string{"a", "b", "c"}
	const goroutines, rounds, calls = 16, 2000, 32
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for range rounds {
				callID := fmt.Sprintf("call-%d", r.IntN(calls))
				node := nodes[r.IntN(len(nodes))]
				var err error
				switch r.IntN(5) {
				case 0:
					err = m.Bind(ctx, session.Binding{CallID: callID, NodeID: node}, time.Hour)
				case 1, 2:
					// Some confirmations expire almost at once, so the sweeper
					// and the writers race for expired bindings too.
					ttl := time.Hour
					if r.IntN(4) == 0 {
						ttl = time.Duration(r.IntN(50)) * time.Microsecond
						ttl++
					}
					err = m.Confirm(ctx, callID, node, ttl)
				case 3:
					err = m.Release(ctx, callID, time.Duration(r.IntN(2))*time.Millisecond)
				case 4:
					err = m.Touch(ctx, callID, time.Hour)
				}
				if err != nil {
					assert.ErrorIs(t, err, session.ErrNotFound)
				}
			}
		})
	}
	wg.Wait()
	rec.requireNeverNegative(t)
	// Only bindings confirmed for an hour are left counted once the short
	// ones have been swept.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, m.ActiveByNode(), rec.nonZero())
	}, 5*time.Second, time.Millisecond)

	for i := range calls {
		err := m.Release(ctx, fmt.Sprintf("call-%d", i), 0)
		if err != nil {
			require.ErrorIs(t, err, session.ErrNotFound)
		}
	}
	assert.Empty(t, rec.nonZero())
	assert.Empty(t, m.ActiveByNode())
	rec.requireNeverNegative(t)
}

func TestMemorySemantics(t *testing.T) {
	ctx := context.Background()
	t.Run("bind sets early and expiry", func(t *testing.T) {
		f := newFixture(t, session.MemoryOptions{})
		require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "a", Attempt: 2, Outbound: true, Via: "192.0.2.10:5060", State: session.Released}, earlyTTL))
		b, err := f.m.Lookup(ctx, "c1")
		require.NoError(t, err)
		assert.Equal(t, session.Binding{
			CallID: "c1", NodeID: "a", Attempt: 2, Outbound: true, Via: "192.0.2.10:5060",
			State: session.Early, Expires: f.clock.Now().Add(earlyTTL),
		}, b)
	})
	t.Run("rebind replaces the via", func(t *testing.T) {
		f := newFixture(t, session.MemoryOptions{})
		require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "a", Via: "192.0.2.10:5060"}, earlyTTL))
		require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "b", Attempt: 1, Via: "192.0.2.11:5060"}, earlyTTL))
		b, err := f.m.Lookup(ctx, "c1")
		require.NoError(t, err)
		assert.Equal(t, "192.0.2.11:5060", b.Via)
		require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "c", Attempt: 2}, earlyTTL))
		b, err = f.m.Lookup(ctx, "c1")
		require.NoError(t, err)
		assert.Empty(t, b.Via, "a re-bind without a Via clears it")
	})
	t.Run("via survives touch, release and rehome", func(t *testing.T) {
		f := newFixture(t, session.MemoryOptions{})
		const via = "[2001:db8::1]:5061"
		require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "a", Via: via}, earlyTTL))
		require.NoError(t, f.m.Touch(ctx, "c1", dialogTTL))
		owner, err := f.m.Rehome(ctx, "c1", "a", "b")
		require.NoError(t, err)
		require.Equal(t, "b", owner)
		require.NoError(t, f.m.Release(ctx, "c1", linger))
		b, err := f.m.Lookup(ctx, "c1")
		require.NoError(t, err)
		assert.Equal(t, session.Binding{
			CallID: "c1", NodeID: "b", Via: via,
			State: session.Released, Expires: f.clock.Now().Add(linger),
		}, b)
	})
	t.Run("a reused slot has no via", func(t *testing.T) {
		f := newFixture(t, session.MemoryOptions{Shards: 1})
		require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "a", Via: "192.0.2.10:5060"}, earlyTTL))
		require.NoError(t, f.m.Release(ctx, "c1", 0))
		session.SweepNow(f.m)
		require.Equal(t, 0, f.m.Len())
		// c2 takes c1's freed slot.
		require.NoError(t, f.m.Confirm(ctx, "c2", "a", dialogTTL))
		b, err := f.m.Lookup(ctx, "c2")
		require.NoError(t, err)
		assert.Empty(t, b.Via)
	})
	t.Run("expired binding is invisible before the sweep", func(t *testing.T) {
		f := newFixture(t, session.MemoryOptions{})
		require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "a"}, earlyTTL))
		f.clock.Advance(earlyTTL - time.Nanosecond)
		_, err := f.m.Lookup(ctx, "c1")
		require.NoError(t, err)
		f.clock.Advance(time.Nanosecond)
		_, err = f.m.Lookup(ctx, "c1")
		require.ErrorIs(t, err, session.ErrNotFound)
		assert.Equal(t, 1, f.m.Len(), "Lookup does not remove")
		require.ErrorIs(t, f.m.Touch(ctx, "c1", dialogTTL), session.ErrNotFound)
		assert.Equal(t, 0, f.m.Len(), "a write removes what it finds expired")
	})
	t.Run("confirm keeps attempt, direction and via and sets the dialog ttl", func(t *testing.T) {
		f := newFixture(t, session.MemoryOptions{})
		require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "a", Attempt: 1, Outbound: true, Via: "192.0.2.10:5060"}, earlyTTL))
		f.clock.Advance(time.Second)
		require.NoError(t, f.m.Confirm(ctx, "c1", "b", dialogTTL))
		b, err := f.m.Lookup(ctx, "c1")
		require.NoError(t, err)
		assert.Equal(t, session.Binding{
			CallID: "c1", NodeID: "b", Attempt: 1, Outbound: true, Via: "192.0.2.10:5060",
			State: session.Confirmed, Expires: f.clock.Now().Add(dialogTTL),
		}, b)
	})
	t.Run("confirm after expiry starts afresh without via", func(t *testing.T) {
		f := newFixture(t, session.MemoryOptions{})
		require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "a", Attempt: 1, Via: "192.0.2.10:5060"}, earlyTTL))
		f.clock.Advance(earlyTTL)
		require.NoError(t, f.m.Confirm(ctx, "c1", "a", dialogTTL))
		b, err := f.m.Lookup(ctx, "c1")
		require.NoError(t, err)
		assert.Equal(t, session.Binding{
			CallID: "c1", NodeID: "a", State: session.Confirmed, Expires: f.clock.Now().Add(dialogTTL),
		}, b)
	})
	t.Run("touch extends and never shortens", func(t *testing.T) {
		f := newFixture(t, session.MemoryOptions{})
		require.NoError(t, f.m.Confirm(ctx, "c1", "a", time.Hour))
		want := f.clock.Now().Add(time.Hour)
		require.NoError(t, f.m.Touch(ctx, "c1", time.Minute))
		b, err := f.m.Lookup(ctx, "c1")
		require.NoError(t, err)
		assert.Equal(t, want, b.Expires, "shortened")
		f.clock.Advance(30 * time.Minute)
		require.NoError(t, f.m.Touch(ctx, "c1", time.Hour))
		b, err = f.m.Lookup(ctx, "c1")
		require.NoError(t, err)
		assert.Equal(t, f.clock.Now().Add(time.Hour), b.Expires, "not extended")
		assert.Equal(t, session.Confirmed, b.State)
	})
	t.Run("touch extends an early binding", func(t *testing.T) {
		f := newFixture(t, session.MemoryOptions{})
		require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "a"}, time.Minute))
		require.NoError(t, f.m.Touch(ctx, "c1", time.Hour))
		b, err := f.m.Lookup(ctx, "c1")
		require.NoError(t, err)
		assert.Equal(t, f.clock.Now().Add(time.Hour), b.Expires)
		assert.Equal(t, session.Early, b.State)
	})
	t.Run("release lingers and touch does not revive", func(t *testing.T) {
		f := newFixture(t, session.MemoryOptions{})
		require.NoError(t, f.m.Confirm(ctx, "c1", "a", dialogTTL))
		require.NoError(t, f.m.Release(ctx, "c1", linger))
		b, err := f.m.Lookup(ctx, "c1")
		require.NoError(t, err)
		assert.Equal(t, session.Released, b.State)
		assert.Equal(t, f.clock.Now().Add(linger), b.Expires)
		require.ErrorIs(t, f.m.Touch(ctx, "c1", dialogTTL), session.ErrNotFound)
		f.clock.Advance(linger)
		_, err = f.m.Lookup(ctx, "c1")
		require.ErrorIs(t, err, session.ErrNotFound)
	})
	t.Run("writes to missing bindings", func(t *testing.T) {
		f := newFixture(t, session.MemoryOptions{})
		require.ErrorIs(t, f.m.Touch(ctx, "nope", time.Hour), session.ErrNotFound)
		require.ErrorIs(t, f.m.Release(ctx, "nope", time.Hour), session.ErrNotFound)
		assert.Equal(t, 0, f.m.Len())
	})
}

func TestMemoryInvalidArguments(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		call func(m *session.Memory) error
		want string
	}{
		{"bind empty Call-ID", func(m *session.Memory) error {
			return m.Bind(ctx, session.Binding{NodeID: "a"}, time.Minute)
		}, "empty Call-ID"},
		{"bind empty node", func(m *session.Memory) error {
			return m.Bind(ctx, session.Binding{CallID: "c"}, time.Minute)
		}, "empty node ID"},
		{"bind negative attempt", func(m *session.Memory) error {
			return m.Bind(ctx, session.Binding{CallID: "c", NodeID: "a", Attempt: -1}, time.Minute)
		}, "attempt -1 out of range"},
		{"bind zero ttl", func(m *session.Memory) error {
			return m.Bind(ctx, session.Binding{CallID: "c", NodeID: "a"}, 0)
		}, "ttl 0s must be positive"},
		{"confirm empty Call-ID", func(m *session.Memory) error {
			return m.Confirm(ctx, "", "a", time.Minute)
		}, "empty Call-ID"},
		{"confirm empty node", func(m *session.Memory) error {
			return m.Confirm(ctx, "c", "", time.Minute)
		}, "empty node ID"},
		{"confirm negative ttl", func(m *session.Memory) error {
			return m.Confirm(ctx, "c", "a", -time.Second)
		}, "ttl -1s must be positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, session.MemoryOptions{})
			require.ErrorContains(t, tt.call(f.m), tt.want)
			assert.Equal(t, 0, f.m.Len())
		})
	}
}

func TestMemoryOptionsValidate(t *testing.T) {
	tests := []struct {
		name string
		opts session.MemoryOptions
		want string // error substring; empty: valid
	}{
		{"zero means defaults", session.MemoryOptions{}, ""},
		{"explicit", session.MemoryOptions{MaxDialogs: 10, Shards: 1, SweepInterval: time.Millisecond}, ""},
		{"more shards", session.MemoryOptions{Shards: 128}, ""},
		{"negative max", session.MemoryOptions{MaxDialogs: -1}, "max_dialogs (-1) must not be negative"},
		{"negative shards", session.MemoryOptions{Shards: -4}, "shards (-4) must not be negative"},
		{"shards not a power of two", session.MemoryOptions{Shards: 12}, "shards (12) must be a power of two"},
		{"too many shards", session.MemoryOptions{Shards: 1 << 20}, "shards (1048576) must be at most 65536"},
		{"negative sweep interval", session.MemoryOptions{SweepInterval: -time.Second}, "sweep_interval (-1s) must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if tt.want == "" {
				require.NoError(t, err)
				return
			}
			require.ErrorContains(t, err, tt.want)
			assert.Panics(t, func() { session.NewMemory(tt.opts) })
		})
	}
}

func TestMemoryMaxDialogs(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, session.MemoryOptions{MaxDialogs: 2, Shards: 1})
	require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "a"}, earlyTTL))
	require.NoError(t, f.m.Confirm(ctx, "c2", "a", dialogTTL))

	require.ErrorIs(t, f.m.Bind(ctx, session.Binding{CallID: "c3", NodeID: "a"}, earlyTTL), session.ErrFull)
	require.ErrorIs(t, f.m.Confirm(ctx, "c3", "a", dialogTTL), session.ErrFull)
	_, err := f.m.Lookup(ctx, "c3")
	require.ErrorIs(t, err, session.ErrNotFound)

	// Existing Call-IDs can still be re-bound and updated.
	require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "b", Attempt: 1}, earlyTTL))
	require.NoError(t, f.m.Confirm(ctx, "c1", "b", dialogTTL))
	require.NoError(t, f.m.Touch(ctx, "c2", dialogTTL))
	require.NoError(t, f.m.Release(ctx, "c2", linger))
	assert.Equal(t, 2, f.m.Len())

	// A released binding holds its place until it has lingered and gone.
	require.ErrorIs(t, f.m.Bind(ctx, session.Binding{CallID: "c3", NodeID: "a"}, earlyTTL), session.ErrFull)
	f.clock.Advance(linger)
	session.SweepNow(f.m)
	assert.Equal(t, 1, f.m.Len())
	require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: "c3", NodeID: "a"}, earlyTTL))
	assert.Equal(t, map[string]int{"b": 1}, f.m.ActiveByNode())
	assert.Equal(t, []string{"a+1", "b+1", "a-1"}, f.rec.Events())
}

func TestMemorySweeperRemovesExpired(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, session.MemoryOptions{SweepInterval: time.Millisecond, Shards: 8})
	for i := range 100 {
		callID := fmt.Sprintf("call-%d", i)
		if i%2 == 0 {
			require.NoError(t, f.m.Confirm(ctx, callID, "a", time.Minute))
		} else {
			require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: callID, NodeID: "a"}, time.Hour))
		}
	}
	// Re-binding and updating in place keep the entry sweepable.
	for i := 1; i < 100; i += 2 {
		require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: fmt.Sprintf("call-%d", i), NodeID: "b", Attempt: 1}, time.Hour))
		require.NoError(t, f.m.Touch(ctx, fmt.Sprintf("call-%d", i), time.Hour))
	}
	assert.Equal(t, 100, f.m.Len())
	f.clock.Advance(time.Minute)
	require.Eventually(t, func() bool { return f.m.Len() == 50 }, 5*time.Second, time.Millisecond)
	require.Eventually(t, func() bool { return len(f.rec.nonZero()) == 0 }, 5*time.Second, time.Millisecond)
	assert.Len(t, f.rec.Events(), 100, "50 ups and 50 downs")
	f.clock.Advance(time.Hour)
	require.Eventually(t, func() bool { return f.m.Len() == 0 }, 5*time.Second, time.Millisecond)
	f.rec.requireNeverNegative(t)

	// Freed slots are reused, and swept Call-IDs can be bound again.
	for i := range 100 {
		require.NoError(t, f.m.Confirm(ctx, fmt.Sprintf("again-%d", i), "b", time.Hour))
		require.NoError(t, f.m.Bind(ctx, session.Binding{CallID: fmt.Sprintf("call-%d", i), NodeID: "c"}, time.Hour))
	}
	assert.Equal(t, 200, f.m.Len())
	assert.Equal(t, map[string]int{"b": 100}, f.m.ActiveByNode())
	for i := range 100 {
		b, err := f.m.Lookup(ctx, fmt.Sprintf("call-%d", i))
		require.NoError(t, err)
		assert.Equal(t, "c", b.NodeID)
	}
}

func TestMemoryClose(t *testing.T) {
	ctx := context.Background()
	m := session.NewMemory(session.MemoryOptions{SweepInterval: time.Millisecond})
	done := session.SweeperDone(m)
	select {
	case <-done:
		t.Fatal("sweeper stopped before Close")
	default:
	}
	require.NoError(t, m.Close())
	select {
	case <-done:
	default:
		t.Fatal("Close returned before the sweeper stopped")
	}
	require.NoError(t, m.Close(), "second Close")

	require.ErrorIs(t, m.Bind(ctx, session.Binding{CallID: "c", NodeID: "a"}, time.Minute), session.ErrUnavailable)
	require.ErrorIs(t, m.Confirm(ctx, "c", "a", time.Minute), session.ErrUnavailable)
	require.ErrorIs(t, m.Touch(ctx, "c", time.Minute), session.ErrUnavailable)
	require.ErrorIs(t, m.Release(ctx, "c", time.Minute), session.ErrUnavailable)
	_, err := m.Lookup(ctx, "c")
	require.ErrorIs(t, err, session.ErrUnavailable)
}

func TestMemoryCloseLeavesNoGoroutine(t *testing.T) {
	stores := make([]*session.Memory, 20)
	for i := range stores {
		stores[i] = session.NewMemory(session.MemoryOptions{SweepInterval: time.Millisecond})
	}
	require.Positive(t, sweepers())
	for _, m := range stores {
		require.NoError(t, m.Close())
	}
	// Every Memory made by the tests so far is closed, so no sweeper is
	// left. (A sweeper that has signalled Close may still be returning, so
	// this polls; TestMemoryClose checks that Close waits.)
	require.Eventually(t, func() bool { return sweepers() == 0 }, 5*time.Second, time.Millisecond)
}

// sweepers counts the goroutines NewMemory started (running or not yet
// scheduled). Counting these rather than runtime.NumGoroutine keeps other
// tests' goroutines out.
func sweepers() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return strings.Count(string(buf[:n]), "created by github.com/sipbalancer/sipbalancer/pkg/session.NewMemory")
		}
		buf = make([]byte, 2*len(buf))
	}
}

func TestMemoryCancelledContextChangesNothing(t *testing.T) {
	f := newFixture(t, session.MemoryOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	require.ErrorIs(t, f.m.Confirm(ctx, "c1", "a", time.Hour), context.Canceled)
	require.ErrorIs(t, f.m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "a"}, time.Hour), context.Canceled)
	assert.Equal(t, 0, f.m.Len())
	assert.Empty(t, f.rec.Events())
}

// TestMemoryHeapPerDialog checks the DESIGN target: at most 2 KiB of heap per
// dialog, map overhead included, measured over 50,000 confirmed dialogs.
func TestMemoryHeapPerDialog(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates 50,000 dialogs")
	}
	perDialog := heapPerDialog(t, 50_000)
	t.Logf("%.0f bytes/dialog", perDialog)
	assert.LessOrEqual(t, perDialog, 2048.0)
}

// heapPerDialog fills a new Memory with n confirmed dialogs, with Call-IDs of
// a typical length (45 bytes) over 8 nodes and 2 Via sent-bys (the addresses
// of the balancer), and returns the growth of the live
// heap divided by n. The Call-IDs built here are garbage once stored (the
// store keeps its own copy), so only what the store holds is measured.
func heapPerDialog(tb testing.TB, n int) float64 {
	tb.Helper()
	ctx := context.Background()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	m := session.NewMemory(session.MemoryOptions{OnActive: func(string, int) {}})
	for i := range n {
		callID := fmt.Sprintf("%08x-%04x-%04x-%012x@10.1.2.3", i, i%65536, 0x4000, i*7919)
		node := fmt.Sprintf("fs-node-%d", i%8)
		via := fmt.Sprintf("192.0.2.%d:5060", 10+i%2)
		require.NoError(tb, m.Bind(ctx, session.Binding{CallID: callID, NodeID: node, Via: via}, time.Hour))
		require.NoError(tb, m.Confirm(ctx, callID, node, 12*time.Hour))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	require.Equal(tb, n, m.Len())
	runtime.KeepAlive(m)
	require.NoError(tb, m.Close())
	return float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
}

// BenchmarkMemoryHeapPerDialog reports the heap a dialog costs (bytes/dialog;
// DESIGN target ≤ 2048) with 50,000 confirmed dialogs held.
func BenchmarkMemoryHeapPerDialog(b *testing.B) {
	var perDialog float64
	for b.Loop() {
		perDialog = heapPerDialog(b, 50_000)
	}
	b.ReportMetric(perDialog, "bytes/dialog")
}

// BenchmarkMemoryBindConfirmRelease measures one call's writes: Bind,
// Confirm, Release. Call-IDs come from a prepared pool so that the loop
// measures the store, not string formatting; with a zero linger a released
// binding is expired, so the next use of its Call-ID is a new dialog (the
// sweeper or that Bind removes the old one), as in real traffic.
func BenchmarkMemoryBindConfirmRelease(b *testing.B) {
	const pool = 1 << 18
	callIDs := make([]string, pool)
	for i := range callIDs {
		callIDs[i] = fmt.Sprintf("%08x-%04x-4000-%012x@10.1.2.3", i, i%65536, i*7919)
	}
	nodes := []string{"fs-1", "fs-2", "fs-3", "fs-4"}
	var active atomic.Int64
	m := session.NewMemory(session.MemoryOptions{OnActive: func(_ string, d int) { active.Add(int64(d)) }})
	b.Cleanup(func() { _ = m.Close() })
	// Each goroutine works on its own stripe of the pool, so that no two
	// goroutines write one Call-ID (that would be a different benchmark).
	stripe := pool / runtime.GOMAXPROCS(0)
	var next atomic.Int64
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		mine := callIDs[int(next.Add(1)-1)*stripe:][:stripe]
		for i := 0; pb.Next(); i++ {
			callID := mine[i%stripe]
			node := nodes[i%len(nodes)]
			if err := m.Bind(ctx, session.Binding{CallID: callID, NodeID: node}, time.Minute); err != nil {
				b.Error(err)
				return
			}
			if err := m.Confirm(ctx, callID, node, time.Hour); err != nil {
				b.Error(err)
				return
			}
			if err := m.Release(ctx, callID, 0); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkMemoryLookup measures the read of an in-dialog request without a
// usable token, over 100,000 held dialogs.
func BenchmarkMemoryLookup(b *testing.B) {
	const n = 100_000
	callIDs := make([]string, n)
	m := session.NewMemory(session.MemoryOptions{})
	b.Cleanup(func() { _ = m.Close() })
	ctx := context.Background()
	for i := range callIDs {
		callIDs[i] = fmt.Sprintf("%08x-%04x-4000-%012x@10.1.2.3", i, i%65536, i*7919)
		require.NoError(b, m.Confirm(ctx, callIDs[i], "fs-1", time.Hour))
	}
	var next atomic.Uint64
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := next.Add(n / 16)
		for pb.Next() {
			i++
			if _, err := m.Lookup(ctx, callIDs[i%n]); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkMemorySweep measures a sweep pass over a full store (1,000,000
// dialogs, the default MaxDialogs, none expired) and reports its cost per
// dialog held (ns/dialog). A sweep holds a shard lock for at most 4096 slots
// at a time, so the longest a SIP write waits behind it is about 4096 times
// that.
func BenchmarkMemorySweep(b *testing.B) {
	const n = 1_000_000
	ctx := context.Background()
	m := session.NewMemory(session.MemoryOptions{SweepInterval: time.Hour})
	b.Cleanup(func() { _ = m.Close() })
	for i := range n {
		callID := fmt.Sprintf("%08x-%04x-4000-%012x@10.1.2.3", i, i%65536, i*7919)
		require.NoError(b, m.Confirm(ctx, callID, "fs-1", time.Hour))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		session.SweepNow(m)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/dialog")
}

func TestMemoryRehome(t *testing.T) {
	var moves []string
	m := session.NewMemory(session.MemoryOptions{OnActive: func(node string, d int) {
		moves = append(moves, fmt.Sprintf("%s%+d", node, d))
	}})
	defer m.Close()
	ctx := context.Background()
	require.NoError(t, m.Bind(ctx, session.Binding{CallID: "c1", NodeID: "fs1", Attempt: 1, Via: "192.0.2.10:5060"}, time.Hour))
	require.NoError(t, m.Confirm(ctx, "c1", "fs1", time.Hour))
	owner, err := m.Rehome(ctx, "c1", "fs1", "fs2")
	require.NoError(t, err)
	require.Equal(t, "fs2", owner)
	// A second instance deciding later (from the old owner) follows the first.
	owner, err = m.Rehome(ctx, "c1", "fs1", "fs3")
	require.NoError(t, err)
	require.Equal(t, "fs2", owner)
	b, err := m.Lookup(ctx, "c1")
	require.NoError(t, err)
	require.Equal(t, "fs2", b.NodeID)
	require.Equal(t, 1, b.Attempt)
	require.Equal(t, "192.0.2.10:5060", b.Via, "re-homing keeps the Via")
	require.Equal(t, []string{"fs1+1", "fs1-1", "fs2+1"}, moves)
	_, err = m.Rehome(ctx, "nope", "fs1", "fs2")
	require.ErrorIs(t, err, session.ErrNotFound)
}
