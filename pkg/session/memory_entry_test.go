package session

import (
	"context"
	"fmt"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestEntrySize pins the size of a stored binding: the Via index fits in the
// padding the other fields leave, so a dialog still costs one 40-byte entry.
func TestEntrySize(t *testing.T) {
	assert.Equal(t, uintptr(40), unsafe.Sizeof(entry{}))
}

// TestMemoryViaInterned: Via sent-bys are interned like node IDs, so that
// many dialogs through a few instance addresses cost a 4-byte index each and
// an entry never pins the caller's string.
func TestMemoryViaInterned(t *testing.T) {
	m := NewMemory(MemoryOptions{})
	t.Cleanup(func() { assert.NoError(t, m.Close()) })
	ctx := context.Background()
	for i := range 1000 {
		// A fresh string each time, as parsed from a message.
		via := fmt.Sprintf("192.0.2.%d:5060", 10+i%3)
		require.NoError(t, m.Bind(ctx, Binding{CallID: fmt.Sprintf("c%d", i), NodeID: "a", Via: via}, time.Hour))
	}
	require.NoError(t, m.Confirm(ctx, "no-via", "a", time.Hour))
	ids := m.vias.cur.Load().ids
	assert.Equal(t, []string{"", "192.0.2.10:5060", "192.0.2.11:5060", "192.0.2.12:5060"}, ids)
	b, err := m.Lookup(ctx, "c4")
	require.NoError(t, err)
	assert.Equal(t, "192.0.2.11:5060", b.Via)
	var s *shard
	for i := range m.shards {
		if idx, ok := m.shards[i].index["no-via"]; ok {
			s = &m.shards[i]
			assert.Equal(t, uint32(noVia), s.slots[idx].via)
		}
	}
	require.NotNil(t, s)
}
