package session

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRingPushEvictAndReplaceFront(t *testing.T) {
	q := newRing(4)
	ops := make([]*op, 7)
	for i := range ops {
		ops[i] = &op{callID: string(rune('a' + i))}
	}
	for _, o := range ops[:4] {
		_, evicted := q.pushEvict(o)
		require.False(t, evicted)
	}
	old, evicted := q.pushEvict(ops[4])
	require.True(t, evicted, "a full ring gives up its oldest op")
	assert.Same(t, ops[0], old)
	assert.Equal(t, 4, q.len())

	batch := q.peek(3, nil)
	require.Equal(t, []*op{ops[1], ops[2], ops[3]}, batch)
	// ops[1] and ops[3] failed and stay at the head, in order; ops[2] is done.
	q.replaceFront(3, []*op{ops[1], ops[3]})
	assert.Equal(t, []*op{ops[1], ops[3], ops[4]}, q.peek(10, nil))
	q.pushEvict(ops[5])
	q.pushEvict(ops[6])
	assert.Equal(t, []*op{ops[3], ops[4], ops[5], ops[6]}, q.peek(10, nil))
	q.replaceFront(4, nil)
	assert.Zero(t, q.len())
	for _, p := range q.buf {
		assert.Nil(t, p, "settled ops must not stay reachable from the ring")
	}
}

// TestRecordApply pins the overlay replay to the semantics of the memory
// store (and of writeScript, which the conformance suite checks against
// Redis).
func TestRecordApply(t *testing.T) {
	const t0 = int64(1_000_000)
	bind := func(node string, attempt int32, outbound bool, now, exp int64) *op {
		return &op{kind: opBind, node: node, attempt: attempt, outbound: outbound, now: now, exp: exp}
	}
	bindVia := func(node, via string, now, exp int64) *op {
		return &op{kind: opBind, node: node, via: via, now: now, exp: exp}
	}
	confirm := func(node string, now, exp int64) *op { return &op{kind: opConfirm, node: node, now: now, exp: exp} }
	touch := func(now, exp int64) *op { return &op{kind: opTouch, now: now, exp: exp} }
	release := func(now, exp int64) *op { return &op{kind: opRelease, now: now, exp: exp} }
	tests := []struct {
		name string
		base record
		ops  []*op
		want record
	}{
		{
			name: "bind replaces",
			base: record{node: "x", via: "192.0.2.9:5060", attempt: 3, state: Confirmed, exp: t0 + 50, present: true},
			ops:  []*op{bind("a", 1, true, t0, t0+100)},
			want: record{node: "a", attempt: 1, outbound: true, state: Early, exp: t0 + 100, present: true},
		},
		{
			name: "bind replaces the via",
			base: record{node: "x", via: "192.0.2.9:5060", state: Early, exp: t0 + 50, present: true},
			ops:  []*op{bindVia("a", "192.0.2.10:5060", t0, t0+100)},
			want: record{node: "a", via: "192.0.2.10:5060", state: Early, exp: t0 + 100, present: true},
		},
		{
			name: "confirm keeps attempt, direction and via of a live binding",
			ops:  []*op{bind("a", 2, true, t0, t0+100), confirm("b", t0+1, t0+1000)},
			want: record{node: "b", attempt: 2, outbound: true, state: Confirmed, exp: t0 + 1000, present: true},
		},
		{
			name: "touch and release keep the via",
			ops:  []*op{bindVia("a", "192.0.2.10:5060", t0, t0+100), confirm("a", t0+1, t0+1000), touch(t0+2, t0+2000), release(t0+3, t0+50)},
			want: record{node: "a", via: "192.0.2.10:5060", state: Released, exp: t0 + 50, present: true},
		},
		{
			name: "confirm of an expired binding starts afresh",
			base: record{node: "a", via: "192.0.2.10:5060", attempt: 2, outbound: true, state: Early, exp: t0, present: true},
			ops:  []*op{confirm("b", t0, t0+1000)},
			want: record{node: "b", state: Confirmed, exp: t0 + 1000, present: true},
		},
		{
			name: "touch extends, never shortens",
			ops:  []*op{confirm("a", t0, t0+100), touch(t0+1, t0+500), touch(t0+2, t0+10)},
			want: record{node: "a", state: Confirmed, exp: t0 + 500, present: true},
		},
		{
			name: "touch does not revive a released binding",
			ops:  []*op{confirm("a", t0, t0+100), release(t0+1, t0+50), touch(t0+2, t0+500)},
			want: record{node: "a", state: Released, exp: t0 + 50, present: true},
		},
		{
			name: "touch and release of nothing do nothing",
			ops:  []*op{touch(t0, t0+500), release(t0, t0+500)},
			want: record{},
		},
		{
			name: "ops judge liveness when they were made",
			base: record{node: "a", state: Confirmed, exp: t0 + 10, present: true},
			// Made before the binding expired, written (replayed) after.
			ops:  []*op{touch(t0+5, t0+500)},
			want: record{node: "a", state: Confirmed, exp: t0 + 500, present: true},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := tt.base
			for _, o := range tt.ops {
				rec.apply(o)
			}
			assert.Equal(t, tt.want, rec)
			// Replaying ops already applied changes nothing: writes may be
			// retried.
			for _, o := range tt.ops {
				rec.apply(o)
			}
			assert.Equal(t, tt.want, rec, "replay")
		})
	}
}

// TestParseRecord: what an HMGET n a s o x v reply reads as. The Via is
// optional, so that dialogs stored without one (by Confirm, or by an older
// version) still read; every other field is required.
func TestParseRecord(t *testing.T) {
	full := func(v any) []any { return []any{"node-a", "1", "2", "1", "1700000000000", v} }
	tests := []struct {
		name string
		vals []any
		want record
	}{
		{"with via", full("192.0.2.10:5060"), record{node: "node-a", via: "192.0.2.10:5060", attempt: 1, state: Confirmed, outbound: true, exp: 1700000000000, present: true}},
		{"empty via", full(""), record{node: "node-a", attempt: 1, state: Confirmed, outbound: true, exp: 1700000000000, present: true}},
		{"no via field", full(nil), record{node: "node-a", attempt: 1, state: Confirmed, outbound: true, exp: 1700000000000, present: true}},
		{"missing key", []any{nil, nil, nil, nil, nil, nil}, record{}},
		{"missing node", []any{nil, "1", "2", "1", "1700000000000", "192.0.2.10:5060"}, record{}},
		{"missing expiry", []any{"node-a", "1", "2", "1", nil, nil}, record{}},
		{"bad state", []any{"node-a", "1", "9", "1", "1700000000000", nil}, record{}},
		{"via of the wrong type", full(int64(5060)), record{}},
		{"short reply", []any{"node-a", "1", "2", "1", "1700000000000"}, record{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, parseRecord(tt.vals))
		})
	}
}
