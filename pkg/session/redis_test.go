package session_test

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sipbalancer/sipbalancer/internal/redistest"
	"github.com/sipbalancer/sipbalancer/pkg/session"
	"github.com/sipbalancer/sipbalancer/pkg/session/storetest"
)

// Every test here starts its own redis-server processes (internal/redistest),
// so tests run in parallel and may kill, restart or freeze their servers.

const (
	// eventually bounds every wait for an asynchronous effect.
	eventually = 10 * time.Second
	// poll is the polling period of those waits.
	poll = 10 * time.Millisecond
)

// quietClient silences go-redis's own process-wide log (one line per
// failed dial), which the outage tests would fill.
var quietClient sync.Once

// newRedisStore returns a Redis store with opts, logging warnings to the
// test, closed when the test ends.
func newRedisStore(t testing.TB, opts session.RedisOptions) *session.Redis {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	quietClient.Do(func() { session.RouteRedisClientLogs(zap.NewNop()) })
	s, err := session.NewRedis(opts)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, s.Close()) })
	return s
}

// testLogger logs warnings and errors to t until t's cleanups are done, and
// then discards them: a Lookup started by a polling assertion can still be
// running when its test ends.
func testLogger(t testing.TB) *zap.Logger {
	var done atomic.Bool
	t.Cleanup(func() { done.Store(true) })
	w := zapcore.AddSync(writerFunc(func(p []byte) (int, error) {
		if !done.Load() {
			t.Log(strings.TrimSuffix(string(p), "\n"))
		}
		return len(p), nil
	}))
	enc := zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	return zap.New(zapcore.NewCore(enc, w, zap.WarnLevel))
}

type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// uniq returns a name unique to this run, so that leftovers never matter.
func uniq(name string) string {
	return name + "-" + strings.ToLower(rand.Text()[:8])
}

// waitWritten waits until s has written everything it was given.
func waitWritten(t testing.TB, s *session.Redis) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		st := s.Stats()
		assert.Zero(c, st.QueueDepth+st.Backlog+st.Pending, "unwritten writes: %+v", st)
	}, eventually, poll)
}

// waitBinding waits until s's Lookup of callID returns node and state.
func waitBinding(t testing.TB, s *session.Redis, callID, node string, state session.DialogState) session.Binding {
	t.Helper()
	var b session.Binding
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		var err error
		b, err = s.Lookup(context.Background(), callID)
		if assert.NoError(c, err, "Lookup %q", callID) {
			assert.Equal(c, node, b.NodeID, "node of %q", callID)
			assert.Equal(c, state, b.State, "state of %q", callID)
		}
	}, eventually, poll)
	return b
}

// waitCounts waits until s's ActiveCounts of nodes equal want (a node
// missing from want must have none). Other nodes, which other tests on the
// same server may use, are not compared, but no count may be negative.
func waitCounts(t testing.TB, s *session.Redis, want map[string]int64, nodes ...string) {
	t.Helper()
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		got, err := s.ActiveCounts(context.Background())
		if !assert.NoError(c, err) {
			return
		}
		for node, n := range got {
			assert.Positive(c, n, "count of %s", node)
		}
		mine := map[string]int64{}
		for _, node := range nodes {
			if n, ok := got[node]; ok {
				mine[node] = n
			}
		}
		assert.Equal(c, want, mine)
	}, eventually, poll)
}

func TestRedisConformance(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	storetest.Run(t, func(t *testing.T) session.Store {
		return newRedisStore(t, session.RedisOptions{Addrs: []string{srv.Addr()}})
	})
}

func TestRedisOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts session.RedisOptions
		mode string // the mode picked, or
		err  string // a substring of the error
	}{
		{name: "one address is standalone", opts: session.RedisOptions{Addrs: []string{"127.0.0.1:6379"}}, mode: session.RedisStandalone},
		{name: "master name is sentinel", opts: session.RedisOptions{Addrs: []string{"127.0.0.1:26379"}, MasterName: "m"}, mode: session.RedisSentinel},
		{name: "sentinels with a master name", opts: session.RedisOptions{Addrs: []string{"10.0.0.1:26379", "10.0.0.2:26379"}, MasterName: "m"}, mode: session.RedisSentinel},
		{name: "several addresses are a cluster", opts: session.RedisOptions{Addrs: []string{"10.0.0.1:6379", "10.0.0.2:6379"}}, mode: session.RedisCluster},
		{name: "cluster from one seed", opts: session.RedisOptions{Mode: "cluster", Addrs: []string{"10.0.0.1:6379"}}, mode: session.RedisCluster},
		{name: "no address", opts: session.RedisOptions{}, err: "addrs"},
		{name: "bad address", opts: session.RedisOptions{Addrs: []string{"localhost"}}, err: `"localhost" is not host:port`},
		{name: "unknown mode", opts: session.RedisOptions{Mode: "ring", Addrs: []string{"a:1"}}, err: `mode "ring"`},
		{name: "standalone with two addresses", opts: session.RedisOptions{Mode: "standalone", Addrs: []string{"a:1", "b:1"}}, err: "standalone mode takes one address"},
		{name: "sentinel without master name", opts: session.RedisOptions{Mode: "sentinel", Addrs: []string{"a:1"}}, err: "master_name is required"},
		{name: "cluster with master name", opts: session.RedisOptions{Mode: "cluster", Addrs: []string{"a:1"}, MasterName: "m"}, err: "master_name is only for sentinel"},
		{name: "cluster with a db", opts: session.RedisOptions{Addrs: []string{"a:1", "b:1"}, DB: 2}, err: "db (2) must be 0"},
		{name: "braces in prefix", opts: session.RedisOptions{Addrs: []string{"a:1"}, KeyPrefix: "sb{x}"}, err: "key_prefix"},
		{name: "negative queue", opts: session.RedisOptions{Addrs: []string{"a:1"}, QueueSize: -1}, err: "queue_size (-1)"},
		{name: "negative lookup timeout", opts: session.RedisOptions{Addrs: []string{"a:1"}, LookupTimeout: -time.Second}, err: "lookup_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.opts.Validate()
			if tt.err != "" {
				require.ErrorContains(t, err, tt.err)
				_, err = session.NewRedis(tt.opts)
				require.ErrorContains(t, err, tt.err)
				return
			}
			require.NoError(t, err)
			// No server listens: NewRedis must not need one.
			s := newRedisStore(t, tt.opts)
			assert.Equal(t, tt.mode, s.Mode())
			assert.Equal(t, tt.mode, s.Stats().Mode)
		})
	}
}

// TestRedisOutage kills Redis under a stream of new calls and restarts it:
// writes never fail or wait, the instance keeps seeing its own writes,
// lookups of everything else fail fast with ErrUnavailable, Stats and
// Healthy show the outage, goroutines stay flat, and every write made during
// the outage is in Redis after it.
func TestRedisOutage(t *testing.T) {
	// Not parallel: it counts the process's goroutines.
	srv := redistest.Start(t)
	const lookupTimeout = 100 * time.Millisecond
	opts := session.RedisOptions{
		Addrs: []string{srv.Addr()},
		// The loop below writes in a burst far denser than real traffic;
		// the queue must absorb it while a flush attempt is under way.
		QueueSize:     8000,
		BacklogSize:   8000,
		LookupTimeout: lookupTimeout,
	}
	s := newRedisStore(t, opts)
	// A second instance on the same Redis, which has no overlay: what it
	// reads is what Redis holds.
	other := newRedisStore(t, opts)
	ctx := context.Background()
	node := uniq("node")
	before := uniq("before")
	require.NoError(t, s.Confirm(ctx, before, node, time.Hour))
	waitBinding(t, other, before, node, session.Confirmed)
	require.Eventually(t, s.Healthy, eventually, poll)
	goroutines := runtime.NumGoroutine()

	srv.Stop()
	require.Eventually(t, func() bool { return !s.Healthy() }, eventually, poll, "Healthy must notice a dead Redis")

	// Lookups that need Redis fail fast.
	start := time.Now()
	_, err := s.Lookup(ctx, before)
	require.ErrorIs(t, err, session.ErrUnavailable)
	assert.Less(t, time.Since(start), lookupTimeout+200*time.Millisecond, "a Lookup must be bounded by LookupTimeout")

	// New calls keep flowing: 3000 calls, 6000 writes, none refused or slow.
	const calls = 3000
	ids := make([]string, calls)
	var slowest time.Duration
	for i := range ids {
		ids[i] = fmt.Sprintf("%s-%d@outage", before, i)
		start := time.Now()
		require.NoError(t, s.Bind(ctx, session.Binding{CallID: ids[i], NodeID: node, Attempt: i % 2, Via: "192.0.2.10:5060"}, time.Hour))
		require.NoError(t, s.Confirm(ctx, ids[i], node, time.Hour))
		slowest = max(slowest, time.Since(start))
	}
	assert.Less(t, slowest, 100*time.Millisecond, "a write waited")

	// The instance is consistent with itself: its own writes are visible,
	// Via included.
	b, err := s.Lookup(ctx, ids[7])
	require.NoError(t, err)
	assert.Equal(t, session.Binding{CallID: ids[7], NodeID: node, Attempt: 1, Via: "192.0.2.10:5060", State: session.Confirmed, Expires: b.Expires}, b)

	st := s.Stats()
	assert.False(t, st.Connected)
	assert.False(t, s.Healthy())
	assert.NotEmpty(t, st.LastError)
	assert.Positive(t, st.Errors)
	assert.LessOrEqual(t, st.QueueDepth, opts.QueueSize)
	assert.LessOrEqual(t, st.Backlog, opts.BacklogSize)
	assert.Equal(t, uint64(0), st.Dropped+st.Evicted, "nothing may be lost within the bounds")
	assert.Equal(t, calls, st.Pending)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		st := s.Stats()
		assert.Equal(c, 0, st.QueueDepth)
		assert.Equal(c, 2*calls, st.Backlog)
	}, eventually, poll, "the writer holds every write of the outage")
	assert.LessOrEqual(t, runtime.NumGoroutine(), goroutines+10, "goroutines grew during the outage")

	srv.Restart()
	waitWritten(t, s)
	require.Eventually(t, s.Healthy, eventually, poll)
	for i := 0; i < calls; i += 97 {
		b := waitBinding(t, other, ids[i], node, session.Confirmed)
		assert.Equal(t, "192.0.2.10:5060", b.Via, "Via of %q", ids[i])
	}
	// The restarted server lost the binding made before the outage (nothing
	// is persisted in this test); the outage's bindings are all there.
	waitCounts(t, other, map[string]int64{node: calls}, node)
	st = s.Stats()
	assert.Equal(t, uint64(2*calls+1), st.Written)
	assert.LessOrEqual(t, runtime.NumGoroutine(), goroutines+10, "goroutines grew after the outage")
}

// TestRedisLongOutageBounded overflows the backlog of a store whose Redis is
// gone: memory stays within the bounds, the oldest writes are given up and
// counted, and the newest are written when Redis returns.
func TestRedisLongOutageBounded(t *testing.T) {
	// Not parallel: it counts the process's goroutines.
	srv := redistest.Start(t)
	opts := session.RedisOptions{Addrs: []string{srv.Addr()}, QueueSize: 100, BacklogSize: 200}
	s := newRedisStore(t, opts)
	other := newRedisStore(t, opts)
	require.Eventually(t, s.Healthy, eventually, poll)
	goroutines := runtime.NumGoroutine()
	srv.Stop()

	ctx := context.Background()
	prefix := uniq("long")
	const writes = 5000
	refused, lastAccepted := 0, -1
	for i := range writes {
		err := s.Bind(ctx, session.Binding{CallID: fmt.Sprintf("%s-%d", prefix, i), NodeID: "n"}, time.Hour)
		if err != nil {
			// The writer drains the queue between flush attempts; a burst
			// this dense outruns it now and then.
			require.ErrorIs(t, err, session.ErrUnavailable)
			refused++
			continue
		}
		lastAccepted = i
	}
	require.GreaterOrEqual(t, lastAccepted, 0)
	st := s.Stats()
	assert.LessOrEqual(t, st.QueueDepth, opts.QueueSize)
	assert.LessOrEqual(t, st.Backlog, opts.BacklogSize)
	// Plus the one op the writer may hold between queue and backlog.
	assert.LessOrEqual(t, st.Pending, opts.QueueSize+opts.BacklogSize+1)
	assert.Equal(t, uint64(refused), st.Dropped)
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		st := s.Stats()
		assert.Zero(c, st.QueueDepth)
		assert.Equal(c, uint64(writes), st.Dropped+st.Evicted+uint64(st.Backlog), "every write is held or counted")
		assert.Equal(c, opts.BacklogSize, st.Pending)
	}, eventually, poll)
	assert.Positive(t, s.Stats().Evicted)
	assert.LessOrEqual(t, runtime.NumGoroutine(), goroutines+10)

	srv.Restart()
	waitWritten(t, s)
	waitBinding(t, other, fmt.Sprintf("%s-%d", prefix, lastAccepted), "n", session.Early)
	_, err := other.Lookup(ctx, fmt.Sprintf("%s-%d", prefix, 0))
	require.ErrorIs(t, err, session.ErrNotFound, "the oldest write was given up")
}

// TestRedisQueueFullNeverBlocks freezes Redis (SIGSTOP) so that the writer
// hangs in a pipeline: the queue fills, writes beyond it are refused at once
// with ErrUnavailable and counted, and lookups give up after LookupTimeout.
func TestRedisQueueFullNeverBlocks(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	const lookupTimeout = 100 * time.Millisecond
	s := newRedisStore(t, session.RedisOptions{
		Addrs:         []string{srv.Addr()},
		QueueSize:     10,
		ReadTimeout:   2 * time.Second,
		WriteTimeout:  2 * time.Second,
		LookupTimeout: lookupTimeout,
	})
	require.Eventually(t, s.Healthy, eventually, poll)
	srv.Pause()
	defer srv.Resume()

	ctx := context.Background()
	prefix := uniq("full")
	refused := 0
	var slowest time.Duration
	for i := range 200 {
		start := time.Now()
		err := s.Bind(ctx, session.Binding{CallID: fmt.Sprintf("%s-%d", prefix, i), NodeID: "n"}, time.Hour)
		slowest = max(slowest, time.Since(start))
		if err != nil {
			require.ErrorIs(t, err, session.ErrUnavailable)
			refused++
		}
	}
	assert.Less(t, slowest, 50*time.Millisecond, "a write waited on a hung Redis")
	assert.Positive(t, refused)
	assert.Equal(t, uint64(refused), s.Stats().Dropped)

	start := time.Now()
	_, err := s.Lookup(ctx, uniq("not-pending"))
	require.ErrorIs(t, err, session.ErrUnavailable)
	assert.Less(t, time.Since(start), lookupTimeout+200*time.Millisecond)
	assert.False(t, s.Healthy())

	srv.Resume()
	waitWritten(t, s)
	require.Eventually(t, s.Healthy, eventually, poll)
}

// TestRedisSharedByInstances: two stores on one Redis see each other's
// bindings, counts and releases, and ActiveCounts heals when bindings expire.
func TestRedisSharedByInstances(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	rec := newActiveRecorder()
	a := newRedisStore(t, session.RedisOptions{Addrs: []string{srv.Addr()}, OnActive: rec.OnActive})
	b := newRedisStore(t, session.RedisOptions{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	n1, n2 := uniq("n1"), uniq("odd node {x}:*")
	c1, c2, c3, c4 := uniq("c1"), uniq("c2"), uniq("c3"), uniq("c4")

	require.NoError(t, a.Bind(ctx, session.Binding{CallID: c1, NodeID: n1, Attempt: 1}, time.Hour))
	require.NoError(t, a.Confirm(ctx, c1, n1, time.Second)) // expires during the test
	require.NoError(t, b.Confirm(ctx, c2, n1, time.Hour))
	require.NoError(t, b.Confirm(ctx, c3, n2, time.Hour))
	require.NoError(t, a.Bind(ctx, session.Binding{CallID: c4, NodeID: n2}, time.Hour)) // early: not active

	// Each instance sees the other's calls.
	got := waitBinding(t, b, c1, n1, session.Confirmed)
	assert.Equal(t, 1, got.Attempt)
	waitBinding(t, a, c3, n2, session.Confirmed)
	waitBinding(t, b, c4, n2, session.Early)
	waitCounts(t, a, map[string]int64{n1: 2, n2: 1}, n1, n2)
	waitCounts(t, b, map[string]int64{n1: 2, n2: 1}, n1, n2)

	// A call confirmed through b ends through a (a BYE sent to the other
	// instance).
	require.NoError(t, a.Release(ctx, c3, time.Hour))
	waitBinding(t, b, c3, n2, session.Released)
	waitCounts(t, b, map[string]int64{n1: 2}, n1, n2)

	// c1 expires without a BYE: the count heals by itself.
	waitCounts(t, b, map[string]int64{n1: 1}, n1, n2)
	_, err := b.Lookup(ctx, c1)
	require.ErrorIs(t, err, session.ErrNotFound)

	// A failover re-bind takes a confirmed call off its node.
	require.NoError(t, b.Bind(ctx, session.Binding{CallID: c2, NodeID: n2, Attempt: 1}, time.Hour))
	waitCounts(t, a, map[string]int64{}, n1, n2)

	// Nothing is left behind in Redis for the expired and released calls:
	// the active sets of the nodes are gone.
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		keys, err := srv.Do("KEYS", "sipb:active:*")
		assert.NoError(c, err)
		assert.Empty(c, keys)
	}, eventually, poll)

	// OnActive reported a's own writes, and healed too (c1 expired).
	require.EventuallyWithT(t, func(c *assert.CollectT) {
		assert.Equal(c, []string{n1 + "+1", n1 + "-1"}, rec.Events())
	}, eventually, poll)
	rec.requireNeverNegative(t)
}

// TestRedisRehome: the owner moves only from the node the caller names, and
// of two instances re-homing one call at once exactly one wins and both
// report the winner's choice.
func TestRedisRehome(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a := newRedisStore(t, session.RedisOptions{Addrs: []string{srv.Addr()}})
	b := newRedisStore(t, session.RedisOptions{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	dead, n2, n3 := uniq("dead"), uniq("n2"), uniq("n3")

	t.Run("Single", func(t *testing.T) {
		id := uniq("single")
		require.NoError(t, a.Bind(ctx, session.Binding{CallID: id, NodeID: dead, Attempt: 2, Outbound: true, Via: "192.0.2.10:5060"}, time.Hour))
		require.NoError(t, a.Confirm(ctx, id, dead, time.Hour))
		waitWritten(t, a)
		owner, err := b.Rehome(ctx, id, dead, n2)
		require.NoError(t, err)
		assert.Equal(t, n2, owner)
		// A late decision elsewhere follows the first one.
		owner, err = a.Rehome(ctx, id, dead, n3)
		require.NoError(t, err)
		assert.Equal(t, n2, owner)
		got, err := a.Lookup(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, n2, got.NodeID)
		assert.Equal(t, session.Confirmed, got.State)
		assert.Equal(t, 2, got.Attempt)
		assert.True(t, got.Outbound)
		assert.Equal(t, "192.0.2.10:5060", got.Via)
		counts, err := a.ActiveCounts(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(1), counts[n2])
		assert.Zero(t, counts[dead])

		_, err = b.Rehome(ctx, uniq("missing"), dead, n2)
		require.ErrorIs(t, err, session.ErrNotFound)
	})

	t.Run("Race", func(t *testing.T) {
		const calls = 50
		ids := make([]string, calls)
		for i := range ids {
			ids[i] = uniq("race")
			require.NoError(t, a.Confirm(ctx, ids[i], dead, time.Hour))
		}
		waitWritten(t, a)
		wins := map[string]int{}
		for _, id := range ids {
			var ownerA, ownerB string
			var errA, errB error
			var wg sync.WaitGroup
			wg.Go(func() { ownerA, errA = a.Rehome(ctx, id, dead, n2) })
			wg.Go(func() { ownerB, errB = b.Rehome(ctx, id, dead, n3) })
			wg.Wait()
			require.NoError(t, errA)
			require.NoError(t, errB)
			require.Equal(t, ownerA, ownerB, "both instances must follow one owner")
			require.Contains(t, []string{n2, n3}, ownerA)
			wins[ownerA]++
		}
		assert.Equal(t, calls, wins[n2]+wins[n3])
		t.Logf("wins: %v", wins)
		counts, err := b.ActiveCounts(ctx)
		require.NoError(t, err)
		assert.Equal(t, int64(calls+1), counts[n2]+counts[n3], "the calls moved with their counts")
		assert.Zero(t, counts[dead])
	})

	t.Run("PendingWrites", func(t *testing.T) {
		// While this instance has an unwritten Confirm for the call, a
		// re-homing would be undone by it: Rehome refuses.
		srv.Pause()
		id := uniq("pending")
		require.NoError(t, a.Confirm(ctx, id, dead, time.Hour))
		_, err := a.Rehome(ctx, id, dead, n2)
		srv.Resume()
		require.ErrorIs(t, err, session.ErrUnavailable)
		require.ErrorIs(t, err, session.ErrRehomePending)
		waitWritten(t, a)
		owner, err := a.Rehome(ctx, id, dead, n2)
		require.NoError(t, err)
		assert.Equal(t, n2, owner)
	})
}

// TestRedisVia: the Via sent-by is stored in the dialog hash by Bind, seen
// by other instances, kept by the other writes, visible in the overlay before
// it is written, and read as empty from a dialog stored without it.
func TestRedisVia(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	a := newRedisStore(t, session.RedisOptions{Addrs: []string{srv.Addr()}})
	b := newRedisStore(t, session.RedisOptions{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	const via = "[2001:db8::1]:5061"

	t.Run("SharedAndKept", func(t *testing.T) {
		id := uniq("via")
		require.NoError(t, a.Bind(ctx, session.Binding{CallID: id, NodeID: "n1", Attempt: 1, Via: via}, time.Hour))
		got := waitBinding(t, b, id, "n1", session.Early)
		assert.Equal(t, via, got.Via)
		assert.Equal(t, via, srv.MustDo("HGET", session.RedisDialogKey(a, id), "v"))

		// Another instance confirms, touches, re-homes and releases: the Via
		// of the INVITE stays.
		require.NoError(t, b.Confirm(ctx, id, "n1", time.Hour))
		require.NoError(t, b.Touch(ctx, id, 2*time.Hour))
		waitWritten(t, b)
		owner, err := b.Rehome(ctx, id, "n1", "n2")
		require.NoError(t, err)
		require.Equal(t, "n2", owner)
		require.NoError(t, b.Release(ctx, id, time.Hour))
		got = waitBinding(t, a, id, "n2", session.Released)
		assert.Equal(t, session.Binding{CallID: id, NodeID: "n2", Attempt: 1, Via: via, State: session.Released, Expires: got.Expires}, got)

		// A re-bind without a Via clears it, in Redis too.
		require.NoError(t, a.Bind(ctx, session.Binding{CallID: id, NodeID: "n3", Attempt: 2}, time.Hour))
		got = waitBinding(t, b, id, "n3", session.Early)
		assert.Empty(t, got.Via)
	})

	t.Run("Overlay", func(t *testing.T) {
		// Before the write reaches Redis, the writing instance sees the Via.
		srv.Pause()
		id := uniq("via-pending")
		require.NoError(t, a.Bind(ctx, session.Binding{CallID: id, NodeID: "n1", Via: via}, time.Hour))
		require.NoError(t, a.Confirm(ctx, id, "n1", time.Hour))
		got, err := a.Lookup(ctx, id)
		srv.Resume()
		require.NoError(t, err)
		assert.Equal(t, via, got.Via)
		assert.Equal(t, session.Confirmed, got.State)
		got = waitBinding(t, b, id, "n1", session.Confirmed)
		assert.Equal(t, via, got.Via)
	})

	t.Run("StoredWithoutVia", func(t *testing.T) {
		// A dialog written before the Via was stored has no v field.
		id := uniq("via-legacy")
		key := session.RedisDialogKey(a, id)
		exp := time.Now().Add(time.Hour).UnixMilli()
		srv.MustDo("HSET", key, "n", "n1", "a", "1", "s", "2", "o", "1", "x", fmt.Sprint(exp))
		srv.MustDo("PEXPIREAT", key, fmt.Sprint(exp))
		got, err := b.Lookup(ctx, id)
		require.NoError(t, err)
		assert.Equal(t, session.Binding{CallID: id, NodeID: "n1", Attempt: 1, Outbound: true, State: session.Confirmed, Expires: time.UnixMilli(exp)}, got)

		// Writes other than Bind do not invent one.
		require.NoError(t, a.Touch(ctx, id, 2*time.Hour))
		require.NoError(t, a.Confirm(ctx, id, "n1", 2*time.Hour))
		waitWritten(t, a)
		got, err = b.Lookup(ctx, id)
		require.NoError(t, err)
		assert.Empty(t, got.Via)
		assert.Equal(t, session.Confirmed, got.State)

		// A dialog created by Confirm has none either.
		fresh := uniq("via-confirm")
		require.NoError(t, a.Confirm(ctx, fresh, "n1", time.Hour))
		got = waitBinding(t, b, fresh, "n1", session.Confirmed)
		assert.Empty(t, got.Via)
	})
}

// TestRedisSentinelFailover kills the master of a Sentinel set under writes:
// the store follows the promoted replica, writes made during the failover
// and after it are stored, and reads see them.
func TestRedisSentinelFailover(t *testing.T) {
	t.Parallel()
	set := redistest.StartSentinelSet(t, 1)
	opts := session.RedisOptions{Addrs: set.SentinelAddrs(), MasterName: set.MasterName()}
	s := newRedisStore(t, opts)
	other := newRedisStore(t, opts)
	require.Equal(t, session.RedisSentinel, s.Mode())
	ctx := context.Background()

	pre := uniq("pre")
	require.NoError(t, s.Confirm(ctx, pre, "n1", time.Hour))
	waitBinding(t, other, pre, "n1", session.Confirmed)
	// Let the replica have it before the master dies.
	replica := set.Servers()[1]
	require.Eventually(t, func() bool {
		v, err := replica.Do("DBSIZE")
		return err == nil && v.(int64) > 0
	}, eventually, poll)

	old := set.KillMaster()
	during := make([]string, 20)
	for i := range during {
		during[i] = uniq("during")
		require.NoError(t, s.Confirm(ctx, during[i], "n1", time.Hour))
	}
	promoted := set.WaitFailover(old)
	require.Equal(t, replica, promoted)

	after := uniq("after")
	require.NoError(t, s.Confirm(ctx, after, "n2", time.Hour))
	waitBinding(t, other, after, "n2", session.Confirmed)
	for _, id := range during {
		waitBinding(t, other, id, "n1", session.Confirmed)
	}
	waitBinding(t, other, pre, "n1", session.Confirmed)
	waitWritten(t, s)
	require.Eventually(t, s.Healthy, eventually, poll)
	waitCounts(t, other, map[string]int64{"n1": int64(len(during) + 1), "n2": 1}, "n1", "n2")
}

// TestRedisCluster runs the store on a Redis Cluster of three masters: the
// conformance suite, active counts and re-homing, with keys on every master.
func TestRedisCluster(t *testing.T) {
	t.Parallel()
	cluster := redistest.StartCluster(t, 3)
	opts := session.RedisOptions{Addrs: cluster.Addrs()}

	t.Run("ShardTagsMatchRedis", func(t *testing.T) {
		owners := map[string]int{}
		for _, tag := range session.RedisShardTags() {
			node := cluster.Nodes()[0]
			v := node.MustDo("CLUSTER", "KEYSLOT", "sipb:d:{"+tag+"}:any-call-id")
			require.Equal(t, int64(session.RedisKeySlot(tag)), v, "slot of tag %q", tag)
			owners[ownerOf(t, cluster, v.(int64))]++
		}
		// 64 shards over three masters that own a third of the slots each.
		for addr, n := range owners {
			assert.InDelta(t, 64/3, n, 2, "shards on %s", addr)
		}
		require.Len(t, owners, 3)
	})

	t.Run("Conformance", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) session.Store {
			return newRedisStore(t, opts)
		})
	})

	t.Run("KeyOperations", func(t *testing.T) {
		t.Parallel()
		a := newRedisStore(t, opts)
		b := newRedisStore(t, opts)
		require.Equal(t, session.RedisCluster, a.Mode())
		ctx := context.Background()
		n1, n2 := uniq("n1"), uniq("n2")
		const calls = 60
		ids := make([]string, calls)
		for i := range ids {
			ids[i] = uniq("cl")
			require.NoError(t, a.Bind(ctx, session.Binding{CallID: ids[i], NodeID: n1}, time.Hour))
			require.NoError(t, a.Confirm(ctx, ids[i], n1, time.Hour))
		}
		waitWritten(t, a)
		waitCounts(t, b, map[string]int64{n1: calls}, n1, n2)
		for _, n := range cluster.Nodes() {
			v := n.MustDo("DBSIZE")
			assert.Positive(t, v.(int64), "keys on every master: %s has none", n.Addr())
		}
		for i, id := range ids[:calls/2] {
			if i%2 == 0 {
				require.NoError(t, b.Release(ctx, id, time.Hour))
				continue
			}
			owner, err := b.Rehome(ctx, id, n1, n2)
			require.NoError(t, err)
			require.Equal(t, n2, owner)
		}
		waitCounts(t, a, map[string]int64{n1: calls / 2, n2: calls / 4}, n1, n2)
		for i, id := range ids[:calls/2] {
			if i%2 == 0 {
				waitBinding(t, a, id, n1, session.Released)
			} else {
				waitBinding(t, a, id, n2, session.Confirmed)
			}
		}
	})
}

// ownerOf returns the address of the cluster node that owns slot.
func ownerOf(t *testing.T, c *redistest.Cluster, slot int64) string {
	t.Helper()
	v := c.Nodes()[0].MustDo("CLUSTER", "SLOTS")
	for _, r := range v.([]any) {
		rng := r.([]any)
		lo, hi := rng[0].(int64), rng[1].(int64)
		if slot >= lo && slot <= hi {
			master := rng[2].([]any)
			return fmt.Sprintf("%s:%d", master[0], master[1])
		}
	}
	t.Fatalf("no owner of slot %d", slot)
	return ""
}

// TestRedisClosed: after Close, every method fails with ErrUnavailable and
// queued writes were written.
func TestRedisClosed(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	opts := session.RedisOptions{Addrs: []string{srv.Addr()}}
	s, err := session.NewRedis(opts)
	require.NoError(t, err)
	other := newRedisStore(t, opts)
	ctx := context.Background()
	ids := make([]string, 100)
	for i := range ids {
		ids[i] = uniq("close")
		require.NoError(t, s.Confirm(ctx, ids[i], "n", time.Hour))
	}
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
	for _, id := range ids {
		_, err := other.Lookup(ctx, id)
		require.NoError(t, err, "a write queued before Close was lost")
	}
	for name, err := range map[string]error{
		"Bind":    s.Bind(ctx, session.Binding{CallID: "x", NodeID: "n"}, time.Hour),
		"Confirm": s.Confirm(ctx, "x", "n", time.Hour),
		"Touch":   s.Touch(ctx, "x", time.Hour),
		"Release": s.Release(ctx, "x", time.Hour),
		"Lookup":  func() error { _, err := s.Lookup(ctx, ids[0]); return err }(),
		"Rehome":  func() error { _, err := s.Rehome(ctx, ids[0], "n", "m"); return err }(),
		"Counts":  func() error { _, err := s.ActiveCounts(ctx); return err }(),
	} {
		assert.ErrorIsf(t, err, session.ErrUnavailable, "%s after Close", name)
	}
	assert.False(t, s.Healthy())
}

// TestRedisLookupCancelled: a caller's cancelled context is reported as
// such, not as an outage.
func TestRedisLookupCancelled(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := newRedisStore(t, session.RedisOptions{Addrs: []string{srv.Addr()}, LookupTimeout: time.Second})
	require.Eventually(t, s.Healthy, eventually, poll)
	srv.Pause()
	defer srv.Resume()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := s.Lookup(ctx, uniq("hung"))
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.False(t, errors.Is(err, session.ErrUnavailable), "a caller's deadline is not an outage: %v", err)
}

// TestRedisScriptsReloaded: a server that lost the store's scripts (SCRIPT
// FLUSH, as after a restart or a failover to a fresh master) gets them again
// and no write is lost or rejected.
func TestRedisScriptsReloaded(t *testing.T) {
	t.Parallel()
	srv := redistest.Start(t)
	s := newRedisStore(t, session.RedisOptions{Addrs: []string{srv.Addr()}})
	other := newRedisStore(t, session.RedisOptions{Addrs: []string{srv.Addr()}})
	ctx := context.Background()
	node := uniq("n")
	for round := range 3 {
		require.Equal(t, "OK", srv.MustDo("SCRIPT", "FLUSH"))
		ids := make([]string, 50)
		for i := range ids {
			ids[i] = uniq("flush")
			require.NoError(t, s.Confirm(ctx, ids[i], node, time.Hour))
		}
		waitWritten(t, s)
		for _, id := range ids {
			waitBinding(t, other, id, node, session.Confirmed)
		}
		require.Equal(t, "OK", srv.MustDo("SCRIPT", "FLUSH"))
		waitCounts(t, other, map[string]int64{node: int64(50 * (round + 1))}, node)
		owner, err := other.Rehome(ctx, ids[0], node, node)
		require.NoError(t, err)
		require.Equal(t, node, owner)
	}
	st := s.Stats()
	assert.Zero(t, st.Rejected+st.Dropped+st.Evicted)
	assert.Equal(t, uint64(150), st.Written)
}

// TestRedisCloseDuringOutage: Close does not wait long for a dead Redis, and
// a hung one (SIGSTOP) cannot hold it up either.
func TestRedisCloseDuringOutage(t *testing.T) {
	t.Parallel()
	for _, hang := range []bool{false, true} {
		t.Run(fmt.Sprintf("hung=%v", hang), func(t *testing.T) {
			t.Parallel()
			srv := redistest.Start(t)
			s, err := session.NewRedis(session.RedisOptions{Addrs: []string{srv.Addr()}, Logger: testLogger(t)})
			require.NoError(t, err)
			require.Eventually(t, s.Healthy, eventually, poll)
			if hang {
				srv.Pause()
				defer srv.Resume()
			} else {
				srv.Stop()
			}
			for range 10 {
				require.NoError(t, s.Confirm(context.Background(), uniq("close"), "n", time.Hour))
			}
			start := time.Now()
			require.NoError(t, s.Close())
			assert.Less(t, time.Since(start), 3*time.Second)
		})
	}
}
