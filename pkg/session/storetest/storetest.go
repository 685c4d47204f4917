// Package storetest is a conformance suite for session.Store implementations.
// Every implementation (the memory store now, the Redis store later) runs the
// same suite, so they cannot drift apart in what callers may rely on.
//
// To run it against an implementation, call Run from a test in that
// implementation's package with a constructor for a fresh, empty-enough
// store:
//
//	func TestRedisConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) session.Store {
//			return newTestRedisStore(t) // a t.Helper builder
//		})
//	}
//
// and run it with the race detector: go test -race -run Conformance ./pkg/session/...
//
// What the suite assumes of newStore and of the store:
//
//   - newStore is called once per subtest, from parallel subtests. Stores may
//     share state (several stores on one Redis server): every subtest uses
//     Call-IDs with a random prefix, so leftovers of other runs do not matter.
//   - Run closes each store when its subtest ends; Close must tolerate a
//     second call if newStore also registers one.
//   - Writes may be applied asynchronously (a queue in front of Redis), but
//     writes of one Call-ID are applied in the order they were made. The
//     suite waits for the effect of a write by polling Lookup with a generous
//     deadline; it never sleeps to synchronise.
//   - The clock is real: the suite uses TTLs of about a second, so a run takes
//     a few seconds of wall time (the subtests overlap), and Binding.Expires
//     may be off by up to a second (a store may keep coarse expiry times).
//   - Touch and Release of a Call-ID with no binding may return nil (a queued
//     write cannot know) or ErrNotFound, but must not create a binding.
package storetest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/session"
)

const (
	// wait bounds every wait for a write to take effect or a TTL to run out.
	wait = 5 * time.Second
	// tick is the polling period of those waits.
	tick = 10 * time.Millisecond
	// slack is the tolerance on Binding.Expires.
	slack = time.Second
	// long is a TTL that does not run out during the suite.
	long = time.Hour
	// short is a TTL that runs out during a subtest.
	short = time.Second
)

// Run runs the conformance suite against stores made by newStore.
func Run(t *testing.T, newStore func(t *testing.T) session.Store) {
	t.Helper()
	tests := []struct {
		name string
		run  func(t *testing.T, h *harness)
	}{
		{"BindLookup", testBindLookup},
		{"RebindReplacesNodeAndAttempt", testRebind},
		{"Confirm", testConfirm},
		{"TouchExtends", testTouch},
		{"ReleaseLingersThenExpires", testRelease},
		{"EarlyBindingExpires", testEarlyExpiry},
		{"NotFound", testNotFound},
		{"ConcurrentCallIDs", testConcurrent},
		{"OddCallIDs", testOddCallIDs},
		{"CancelledContext", testCancelledContext},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.run(t, newHarness(t, newStore))
		})
	}
}

// harness holds one subtest's store and its Call-ID prefix.
type harness struct {
	t      *testing.T
	store  session.Store
	prefix string
}

func newHarness(t *testing.T, newStore func(t *testing.T) session.Store) *harness {
	t.Helper()
	s := newStore(t)
	require.NotNil(t, s, "newStore returned nil")
	t.Cleanup(func() { assert.NoError(t, s.Close(), "Close") })
	return &harness{t: t, store: s, prefix: strings.ToLower(rand.Text()[:10])}
}

// callID returns a Call-ID unique to this run of the subtest.
func (h *harness) callID(name string) string {
	return fmt.Sprintf("%s-%s@storetest.invalid", h.prefix, name)
}

func (h *harness) bind(b session.Binding, ttl time.Duration) {
	h.t.Helper()
	require.NoError(h.t, h.store.Bind(context.Background(), b, ttl), "Bind %q", b.CallID)
}

func (h *harness) confirm(callID, nodeID string, ttl time.Duration) {
	h.t.Helper()
	require.NoError(h.t, h.store.Confirm(context.Background(), callID, nodeID, ttl), "Confirm %q", callID)
}

// waitFor polls Lookup until the binding of want.CallID has want's node,
// attempt, direction, Via and state (want.Expires is ignored), checks that the
// binding seen expires ttl after a time in [from, now], and returns it.
func (h *harness) waitFor(want session.Binding, from time.Time, ttl time.Duration) session.Binding {
	h.t.Helper()
	var seen session.Binding
	require.EventuallyWithT(h.t, func(c *assert.CollectT) {
		b, err := h.store.Lookup(context.Background(), want.CallID)
		if !assert.NoError(c, err, "Lookup %q", want.CallID) {
			return
		}
		seen = b
		b.Expires, want.Expires = time.Time{}, time.Time{}
		assert.Equal(c, want, b)
	}, wait, tick)
	h.requireExpiry(seen, from, ttl)
	return seen
}

// sub returns the harness for a subtest of h's test.
func (h *harness) sub(t *testing.T) *harness {
	return &harness{t: t, store: h.store, prefix: h.prefix}
}

// requireExpiry checks that b expires ttl after a time in [from, now].
func (h *harness) requireExpiry(b session.Binding, from time.Time, ttl time.Duration) {
	h.t.Helper()
	lo, hi := from.Add(ttl-slack), time.Now().Add(ttl+slack)
	require.Truef(h.t, !b.Expires.Before(lo) && !b.Expires.After(hi),
		"Expires %s not in [%s, %s]", b.Expires.Format(time.RFC3339Nano), lo.Format(time.RFC3339Nano), hi.Format(time.RFC3339Nano))
}

// waitGone polls Lookup until it returns ErrNotFound.
func (h *harness) waitGone(callID string) {
	h.t.Helper()
	require.EventuallyWithT(h.t, func(c *assert.CollectT) {
		_, err := h.store.Lookup(context.Background(), callID)
		assert.ErrorIs(c, err, session.ErrNotFound, "Lookup %q", callID)
	}, wait, tick)
}

// requireAbsent checks that callID has no binding now.
func (h *harness) requireAbsent(callID string) {
	h.t.Helper()
	b, err := h.store.Lookup(context.Background(), callID)
	require.ErrorIs(h.t, err, session.ErrNotFound, "Lookup %q returned %+v", callID, b)
}

// requireNilOrNotFound accepts the two answers a write to a missing binding
// may give.
func requireNilOrNotFound(t *testing.T, err error, op string) {
	t.Helper()
	if err != nil {
		require.ErrorIs(t, err, session.ErrNotFound, op)
	}
}

func testBindLookup(t *testing.T, h *harness) {
	id := h.callID("bind")
	from := time.Now()
	// State and Expires of the argument are ignored: Bind makes an early
	// binding that expires after ttl.
	h.bind(session.Binding{
		CallID: id, NodeID: "node-a", Attempt: 0, Outbound: true, Via: "192.0.2.10:5060",
		State: session.Confirmed, Expires: from.Add(100 * long),
	}, long)
	h.waitFor(session.Binding{CallID: id, NodeID: "node-a", Outbound: true, Via: "192.0.2.10:5060", State: session.Early}, from, long)

	// A Via is stored as it is: an IPv6 reference, a host name.
	for i, via := range []string{"[2001:db8::1]:5061", "lb-1.example.invalid:5060"} {
		id := h.callID(fmt.Sprintf("bind-via-%d", i))
		h.bind(session.Binding{CallID: id, NodeID: "node-a", Via: via}, long)
		h.waitFor(session.Binding{CallID: id, NodeID: "node-a", Via: via, State: session.Early}, from, long)
	}
}

func testRebind(t *testing.T, h *harness) {
	id := h.callID("rebind")
	h.bind(session.Binding{CallID: id, NodeID: "node-a", Attempt: 0, Outbound: true, Via: "192.0.2.10:5060"}, long)
	// A failover re-binds the Call-ID to the next candidate, possibly from
	// another instance: the Via is replaced with the rest.
	from := time.Now()
	h.bind(session.Binding{CallID: id, NodeID: "node-b", Attempt: 1, Via: "192.0.2.11:5060"}, long)
	h.waitFor(session.Binding{CallID: id, NodeID: "node-b", Attempt: 1, Via: "192.0.2.11:5060", State: session.Early}, from, long)

	// Re-binding a confirmed binding makes it early again, and a re-bind
	// without a Via clears the old one.
	h.confirm(id, "node-b", long)
	h.waitFor(session.Binding{CallID: id, NodeID: "node-b", Attempt: 1, Via: "192.0.2.11:5060", State: session.Confirmed}, from, long)
	from = time.Now()
	h.bind(session.Binding{CallID: id, NodeID: "node-c", Attempt: 2}, 2*long)
	h.waitFor(session.Binding{CallID: id, NodeID: "node-c", Attempt: 2, State: session.Early}, from, 2*long)
}

func testConfirm(t *testing.T, h *harness) {
	t.Run("AfterBind", func(t *testing.T) {
		h := h.sub(t)
		id := h.callID("confirm")
		h.bind(session.Binding{CallID: id, NodeID: "node-a", Attempt: 1, Outbound: true, Via: "192.0.2.10:5060"}, short)
		from := time.Now()
		h.confirm(id, "node-a", long)
		// Attempt, Outbound and Via survive; the TTL becomes the dialog TTL.
		b := h.waitFor(session.Binding{CallID: id, NodeID: "node-a", Attempt: 1, Outbound: true, Via: "192.0.2.10:5060", State: session.Confirmed}, from, long)
		assert.Equal(t, "192.0.2.10:5060", b.Via, "Confirm dropped the Via of the Bind")
	})
	t.Run("WithoutBind", func(t *testing.T) {
		h := h.sub(t)
		id := h.callID("confirm-new")
		from := time.Now()
		h.confirm(id, "node-a", long)
		b := h.waitFor(session.Binding{CallID: id, NodeID: "node-a", State: session.Confirmed}, from, long)
		assert.Empty(t, b.Via, "a binding created by Confirm has no Via")
	})
	t.Run("Twice", func(t *testing.T) {
		h := h.sub(t)
		id := h.callID("confirm-twice")
		h.confirm(id, "node-a", long)
		from := time.Now()
		h.confirm(id, "node-a", 2*long)
		h.waitFor(session.Binding{CallID: id, NodeID: "node-a", State: session.Confirmed}, from, 2*long)
	})
	t.Run("OtherNode", func(t *testing.T) {
		h := h.sub(t)
		id := h.callID("confirm-move")
		h.confirm(id, "node-a", long)
		from := time.Now()
		h.confirm(id, "node-b", long)
		h.waitFor(session.Binding{CallID: id, NodeID: "node-b", State: session.Confirmed}, from, long)
	})
}

func testTouch(t *testing.T, h *harness) {
	id := h.callID("touch")
	h.confirm(id, "node-a", short)
	from := time.Now()
	require.NoError(t, h.store.Touch(context.Background(), id, long))
	h.waitFor(session.Binding{CallID: id, NodeID: "node-a", State: session.Confirmed}, from, long)
	// Well past the original TTL the binding is still there.
	assert.Never(t, func() bool {
		_, err := h.store.Lookup(context.Background(), id)
		return err != nil
	}, short+short/2, 50*time.Millisecond, "binding vanished after Touch extended it")

	// Touch never shortens.
	require.NoError(t, h.store.Touch(context.Background(), id, time.Millisecond))
	assert.Never(t, func() bool {
		_, err := h.store.Lookup(context.Background(), id)
		return err != nil
	}, short/2, 50*time.Millisecond, "Touch with a short TTL shortened the binding")
	b, err := h.store.Lookup(context.Background(), id)
	require.NoError(t, err)
	h.requireExpiry(b, from, long)

	// Touch does not create a binding.
	missing := h.callID("touch-missing")
	requireNilOrNotFound(t, h.store.Touch(context.Background(), missing, long), "Touch of a missing binding")
	assert.Never(t, func() bool {
		_, err := h.store.Lookup(context.Background(), missing)
		return err == nil
	}, short/2, 50*time.Millisecond, "Touch created a binding")
}

func testRelease(t *testing.T, h *harness) {
	id := h.callID("release")
	const via = "192.0.2.10:5060"
	from := time.Now()
	h.bind(session.Binding{CallID: id, NodeID: "node-a", Attempt: 2, Via: via}, long)
	h.confirm(id, "node-a", long)
	require.NoError(t, h.store.Touch(context.Background(), id, long))
	// Confirm and Touch keep the Via.
	h.waitFor(session.Binding{CallID: id, NodeID: "node-a", Attempt: 2, Via: via, State: session.Confirmed}, from, long)

	from = time.Now()
	require.NoError(t, h.store.Release(context.Background(), id, short))
	// Until the linger passes, the binding still routes, marked Released,
	// with its Via: a retransmitted CANCEL still matches.
	b := h.waitFor(session.Binding{CallID: id, NodeID: "node-a", Attempt: 2, Via: via, State: session.Released}, from, short)
	if !b.Expires.IsZero() {
		assert.False(t, b.Expires.After(time.Now().Add(short+slack)), "released binding expires at %s, after its linger", b.Expires)
	}
	// Touch does not revive a released binding.
	requireNilOrNotFound(t, h.store.Touch(context.Background(), id, long), "Touch of a released binding")
	h.waitGone(id)

	// Release does not create a binding.
	missing := h.callID("release-missing")
	requireNilOrNotFound(t, h.store.Release(context.Background(), missing, long), "Release of a missing binding")
	assert.Never(t, func() bool {
		_, err := h.store.Lookup(context.Background(), missing)
		return err == nil
	}, short/2, 50*time.Millisecond, "Release created a binding")
}

func testEarlyExpiry(t *testing.T, h *harness) {
	id := h.callID("early-expiry")
	from := time.Now()
	h.bind(session.Binding{CallID: id, NodeID: "node-a"}, short)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		b, err := h.store.Lookup(context.Background(), id)
		if assert.NoError(c, err) {
			assert.Equal(c, session.Early, b.State)
			assert.Equal(c, "node-a", b.NodeID)
		}
	}, short, tick, "the binding never became visible")
	h.waitGone(id)
	assert.GreaterOrEqual(t, time.Since(from), short-slack/2, "expired too early")
}

func testNotFound(t *testing.T, h *harness) {
	b, err := h.store.Lookup(context.Background(), h.callID("never-bound"))
	require.ErrorIs(t, err, session.ErrNotFound)
	assert.Zero(t, b)
}

func testConcurrent(t *testing.T, h *harness) {
	const goroutines, perGoroutine = 8, 100
	node := func(g int) string { return fmt.Sprintf("node-%d", g%3) }
	id := func(g, i int) string { return h.callID(fmt.Sprintf("concurrent-%d-%d", g, i)) }
	ctx := context.Background()
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range perGoroutine {
				callID := id(g, i)
				assert.NoError(t, h.store.Bind(ctx, session.Binding{CallID: callID, NodeID: node(g), Attempt: i % 3}, long))
				// Reads of our own and of others' Call-IDs race the writes.
				for _, other := range []string{callID, id((g+1)%goroutines, i)} {
					b, err := h.store.Lookup(ctx, other)
					if err != nil {
						assert.ErrorIs(t, err, session.ErrNotFound)
						continue
					}
					assert.Equal(t, other, b.CallID)
				}
				assert.NoError(t, h.store.Confirm(ctx, callID, node(g), long))
			}
		})
	}
	wg.Wait()
	for g := range goroutines {
		for i := range perGoroutine {
			h.waitFor(session.Binding{CallID: id(g, i), NodeID: node(g), Attempt: i % 3, State: session.Confirmed}, time.Now().Add(-wait), long)
		}
	}
}

func testOddCallIDs(t *testing.T, h *harness) {
	base := h.callID("")
	odd := []string{
		base + " with spaces ",
		base + "a b",
		base + "a_b",
		base + "a%20b",
		base + "@@at@@",
		base + "ünïcødé-☎-呼叫",
		base + "tab\there",
		base + `quote"d;param=1<>`,
		base + "{hash-tag}:colon*glob?[x]",
		base + strings.Repeat("0123456789", 20)[:200-len(base)],
	}
	require.Len(t, odd[len(odd)-1], 200)
	for i, id := range odd {
		h.bind(session.Binding{CallID: id, NodeID: fmt.Sprintf("node-%d", i), Attempt: i}, long)
	}
	for i, id := range odd {
		b := h.waitFor(session.Binding{CallID: id, NodeID: fmt.Sprintf("node-%d", i), Attempt: i, State: session.Early}, time.Now().Add(-wait), long)
		assert.Equal(t, id, b.CallID)
	}
	// Writes reach the right binding too.
	h.confirm(odd[0], "node-x", long)
	require.NoError(t, h.store.Release(context.Background(), odd[len(odd)-1], long))
	h.waitFor(session.Binding{CallID: odd[0], NodeID: "node-x", State: session.Confirmed}, time.Now().Add(-wait), long)
	h.waitFor(session.Binding{CallID: odd[len(odd)-1], NodeID: fmt.Sprintf("node-%d", len(odd)-1), Attempt: len(odd) - 1, State: session.Released}, time.Now().Add(-wait), long)
}

func testCancelledContext(t *testing.T, h *harness) {
	kept := h.callID("cancel-kept")
	h.confirm(kept, "node-a", long)
	h.waitFor(session.Binding{CallID: kept, NodeID: "node-a", State: session.Confirmed}, time.Now(), long)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	fresh := h.callID("cancel-fresh")
	calls := map[string]error{
		"Bind":         h.store.Bind(ctx, session.Binding{CallID: fresh, NodeID: "node-b"}, long),
		"Bind(kept)":   h.store.Bind(ctx, session.Binding{CallID: kept, NodeID: "node-b"}, long),
		"Confirm":      h.store.Confirm(ctx, kept, "node-b", long),
		"Touch":        h.store.Touch(ctx, kept, 2*long),
		"Release":      h.store.Release(ctx, kept, time.Millisecond),
		"Lookup(kept)": lookupErr(h.store.Lookup(ctx, kept)),
	}
	for op, err := range calls {
		require.ErrorIsf(t, err, context.Canceled, "%s with a cancelled context", op)
	}

	// None of the refused writes took effect.
	assert.Never(t, func() bool {
		b, err := h.store.Lookup(context.Background(), kept)
		if err != nil || b.NodeID != "node-a" || b.State != session.Confirmed {
			return true
		}
		_, err = h.store.Lookup(context.Background(), fresh)
		return !errors.Is(err, session.ErrNotFound)
	}, short/2, 50*time.Millisecond, "a write with a cancelled context took effect")
	b, err := h.store.Lookup(context.Background(), kept)
	require.NoError(t, err)
	h.requireExpiry(b, time.Now().Add(-wait), long)
	assert.False(t, b.Expires.After(time.Now().Add(long+slack)), "Touch with a cancelled context extended the binding")
}

func lookupErr(_ session.Binding, err error) error { return err }
