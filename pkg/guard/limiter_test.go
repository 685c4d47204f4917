package guard

import (
	"net/netip"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Unix(1_700_000_000, 0)

func newTestLimiter(t testing.TB, cfg LimiterConfig) *Limiter {
	t.Helper()
	if cfg.MaxSources == 0 {
		cfg.MaxSources = 1024
	}
	l, err := NewLimiter(cfg)
	require.NoError(t, err)
	return l
}

// allowN counts the allowed of n requests at time at.
func allowN(l *Limiter, src netip.Addr, newCall bool, at time.Time, n int) int {
	ok := 0
	for range n {
		if l.Allow(src, newCall, at) == Allowed {
			ok++
		}
	}
	return ok
}

func TestLimiterBurstThenRate(t *testing.T) {
	l := newTestLimiter(t, LimiterConfig{RequestRate: 10, RequestBurst: 5})
	src := addr("192.0.2.1")
	assert.Equal(t, 5, allowN(l, src, false, t0, 20), "a full bucket lets the burst through")
	assert.Equal(t, 0, allowN(l, src, false, t0.Add(50*time.Millisecond), 5), "half an interval: nothing")
	assert.Equal(t, 1, allowN(l, src, false, t0.Add(100*time.Millisecond), 5), "one interval: one")
	assert.Equal(t, 3, allowN(l, src, false, t0.Add(400*time.Millisecond), 5), "three more intervals: three")
	assert.Equal(t, 5, allowN(l, src, false, t0.Add(time.Hour), 20), "refills to the burst, no more")
	assert.Equal(t, LimitedSource, l.Allow(src, false, t0.Add(time.Hour)))
}

func TestLimiterSustainedRate(t *testing.T) {
	l := newTestLimiter(t, LimiterConfig{RequestRate: 100, RequestBurst: 1})
	src := addr("192.0.2.1")
	ok := 0
	// 10 s at 1,000 requests/s: 100/s get through (plus the first).
	for i := range 10_000 {
		if l.Allow(src, false, t0.Add(time.Duration(i)*time.Millisecond)) == Allowed {
			ok++
		}
	}
	assert.InDelta(t, 1000, ok, 2)
}

func TestLimiterPerSourceIsolation(t *testing.T) {
	l := newTestLimiter(t, LimiterConfig{RequestRate: 1, RequestBurst: 2})
	a, b := addr("192.0.2.1"), addr("192.0.2.2")
	assert.Equal(t, 2, allowN(l, a, false, t0, 10))
	assert.Equal(t, 2, allowN(l, b, false, t0, 10), "b has its own bucket")
	assert.Equal(t, 0, allowN(l, a, false, t0, 1))
}

func TestLimiterInviteBucket(t *testing.T) {
	l := newTestLimiter(t, LimiterConfig{InviteRate: 1, InviteBurst: 2, RequestRate: 100, RequestBurst: 100})
	src := addr("192.0.2.1")
	assert.Equal(t, 2, allowN(l, src, true, t0, 10), "new calls: the invite burst")
	assert.Equal(t, 10, allowN(l, src, false, t0, 10), "other requests still pass")
	assert.Equal(t, 1, allowN(l, src, true, t0.Add(time.Second), 10))
}

func TestLimiterGlobal(t *testing.T) {
	l := newTestLimiter(t, LimiterConfig{GlobalInviteRate: 10, GlobalInviteBurst: 3})
	assert.Zero(t, l.Capacity(), "no per-source bucket: no table")
	got := 0
	for i := range 10 {
		src := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		if l.Allow(src, true, t0) == Allowed {
			got++
		} else {
			assert.Equal(t, LimitedGlobal, l.Allow(src, true, t0))
		}
	}
	assert.Equal(t, 3, got, "the global burst is shared by every source")
	assert.Equal(t, Allowed, l.Allow(addr("192.0.2.1"), false, t0), "only new calls draw on it")
	assert.Equal(t, LimitedGlobal, l.AllowExempt(true, t0), "exempt sources are still under the global cap")
	assert.Equal(t, Allowed, l.AllowExempt(true, t0.Add(100*time.Millisecond)))
}

func TestLimiterSourceRefusalSparesGlobal(t *testing.T) {
	l := newTestLimiter(t, LimiterConfig{InviteRate: 1, InviteBurst: 1, GlobalInviteRate: 1, GlobalInviteBurst: 2})
	flood := addr("198.51.100.1")
	assert.Equal(t, Allowed, l.Allow(flood, true, t0))
	for range 100 {
		assert.Equal(t, LimitedSource, l.Allow(flood, true, t0))
	}
	assert.Equal(t, Allowed, l.Allow(addr("192.0.2.1"), true, t0), "the flood's refused calls left the global bucket alone")
}

func TestLimiterExempt(t *testing.T) {
	l := newTestLimiter(t, LimiterConfig{RequestRate: 1, RequestBurst: 1})
	for range 100 {
		require.Equal(t, Allowed, l.AllowExempt(false, t0))
	}
	var nilL *Limiter
	assert.Equal(t, Allowed, nilL.Allow(addr("192.0.2.1"), true, t0))
}

func TestLimiterIPv6By64(t *testing.T) {
	l := newTestLimiter(t, LimiterConfig{RequestRate: 1, RequestBurst: 3})
	for i := range 3 {
		src := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(i + 1)})
		require.Equal(t, Allowed, l.Allow(src, false, t0))
	}
	other := addr("2001:db8:0:0:ffff::1")
	assert.Equal(t, LimitedSource, l.Allow(other, false, t0), "same /64")
	assert.Equal(t, Allowed, l.Allow(addr("2001:db8:0:1::1"), false, t0), "next /64")
	assert.Equal(t, Allowed, l.Allow(addr("::ffff:192.0.2.1"), false, t0))
	assert.Equal(t, LimitedSource, allowVerdictN(l, addr("192.0.2.1"), 3), "4-in-6 is the IPv4 source")
}

func allowVerdictN(l *Limiter, src netip.Addr, n int) Verdict {
	v := Allowed
	for range n {
		v = l.Allow(src, false, t0)
	}
	return v
}

func TestLimiterConfigErrors(t *testing.T) {
	for name, cfg := range map[string]LimiterConfig{
		"negative rate":        {RequestRate: -1},
		"burst 0 with a rate":  {InviteRate: 5},
		"global burst 0":       {GlobalInviteRate: 5},
		"no table":             {RequestRate: 1, RequestBurst: 1, MaxSources: 0},
		"negative global rate": {GlobalInviteRate: -3, GlobalInviteBurst: 1},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := NewLimiter(cfg)
			assert.Error(t, err)
		})
	}
	l, err := NewLimiter(LimiterConfig{})
	require.NoError(t, err)
	assert.Equal(t, Allowed, l.Allow(addr("192.0.2.1"), true, t0), "all off: allow")
}

// TestLimiterMemoryFlat: a million distinct sources leave the table at its
// fixed size and the heap where it was.
func TestLimiterMemoryFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("1M sources")
	}
	const maxSources = 10_000
	l := newTestLimiter(t, LimiterConfig{RequestRate: 1, RequestBurst: 1, InviteRate: 1, InviteBurst: 1, MaxSources: maxSources})
	assert.Equal(t, maxSources, l.Capacity())

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range 1_000_000 {
		src := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		l.Allow(src, i%2 == 0, t0.Add(time.Duration(i)))
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	assert.LessOrEqual(t, l.Tracked(), l.Capacity())
	assert.Greater(t, l.Tracked(), maxSources*9/10, "the table fills")
	growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	assert.Less(t, growth, int64(256<<10), "heap grew by %d bytes", growth)
	assert.Less(t, after.Mallocs-before.Mallocs, uint64(1000), "Allow does not allocate")
}

// TestLimiterForgetsNeverRefuses: sources pushed out of a full table start
// again with a full bucket.
func TestLimiterForgetsNeverRefuses(t *testing.T) {
	l := newTestLimiter(t, LimiterConfig{RequestRate: 1, RequestBurst: 1, MaxSources: 8})
	victim := addr("192.0.2.1")
	require.Equal(t, Allowed, l.Allow(victim, false, t0))
	require.Equal(t, LimitedSource, l.Allow(victim, false, t0))
	for i := range 100 {
		l.Allow(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), false, t0.Add(time.Duration(i+1)))
	}
	assert.Equal(t, 8, l.Tracked())
	assert.Equal(t, Allowed, l.Allow(victim, false, t0.Add(time.Millisecond)), "evicted: a fresh bucket")
}

func TestLimiterLRUKeepsActiveSource(t *testing.T) {
	// One set of 8 ways: an active source refreshed between newcomers
	// is never the least recently seen, so it keeps its (empty) bucket.
	l := newTestLimiter(t, LimiterConfig{RequestRate: 1, RequestBurst: 1, MaxSources: 8})
	active := addr("192.0.2.1")
	now := t0
	require.Equal(t, Allowed, l.Allow(active, false, now))
	for i := range 100 {
		now = now.Add(time.Microsecond)
		l.Allow(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}), false, now)
		now = now.Add(time.Microsecond)
		require.Equal(t, LimitedSource, l.Allow(active, false, now), "round %d", i)
	}
}

func TestLimiterConcurrent(t *testing.T) {
	l := newTestLimiter(t, LimiterConfig{RequestRate: 1000, RequestBurst: 10, InviteRate: 10, InviteBurst: 10,
		GlobalInviteRate: 50, GlobalInviteBurst: 50, MaxSources: 64})
	var wg sync.WaitGroup
	var mu sync.Mutex
	global := 0
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			for i := range 5000 {
				src := netip.AddrFrom4([4]byte{10, 0, byte(g), byte(i % 200)})
				if l.Allow(src, true, t0) == Allowed {
					n++
				}
			}
			mu.Lock()
			global += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	assert.Equal(t, 50, global, "the global burst is exact under contention")
	assert.LessOrEqual(t, l.Tracked(), l.Capacity())
}

func TestLimiterNoAllocs(t *testing.T) {
	l := newTestLimiter(t, LimiterConfig{RequestRate: 1e6, RequestBurst: 1e6, InviteRate: 1e6, InviteBurst: 1e6,
		GlobalInviteRate: 1e6, GlobalInviteBurst: 1e6})
	src := addr("2001:db8::1")
	assert.Zero(t, testing.AllocsPerRun(1000, func() { l.Allow(src, true, t0) }))
}
