package session

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// RedisStats is a snapshot of the Redis store's state and counters, for
// metrics and /readyz. Counters only grow.
type RedisStats struct {
	// Mode is the deployment mode: standalone, sentinel or cluster.
	Mode string
	// Connected is true when the last round trip to Redis (a flush, a
	// lookup, a ping) succeeded.
	Connected bool
	// LastOK is when a round trip last succeeded (zero: never).
	LastOK time.Time
	// LastError is the error of the last failed round trip, LastErrorAt
	// when it happened (empty and zero: none yet).
	LastError   string
	LastErrorAt time.Time

	// QueueDepth is the number of writes waiting in the queue, out of
	// QueueCapacity.
	QueueDepth, QueueCapacity int
	// Backlog is the number of writes the writer has taken but not written
	// yet (in flight, or waiting for Redis), out of BacklogCapacity.
	Backlog, BacklogCapacity int
	// Pending is the number of Call-IDs with writes not written yet (the
	// Lookup overlay).
	Pending int

	// Written counts writes Redis applied.
	Written uint64
	// Dropped counts writes refused at once because the queue was full; the
	// caller got ErrUnavailable.
	Dropped uint64
	// Evicted counts writes given up, oldest first, because the backlog
	// overflowed while Redis was unreachable.
	Evicted uint64
	// Rejected counts writes Redis refused with an error that a retry
	// cannot fix.
	Rejected uint64
	// Errors counts failed round trips: flushes, lookups, pings, counts.
	Errors uint64

	// Lookups counts reads of Redis by Lookup; LookupErrors those that
	// failed; OverlayHits the Lookups answered from this instance's unwritten
	// writes without a read.
	Lookups, LookupErrors, OverlayHits uint64
	// LookupLatency is the distribution of Lookup read times.
	LookupLatency LatencyHistogram
}

// LatencyHistogram is a cumulative histogram of durations, in the shape a
// Prometheus const histogram takes.
type LatencyHistogram struct {
	// Bounds are the buckets' upper bounds, ascending.
	Bounds []time.Duration
	// Counts[i] is the number of observations ≤ Bounds[i] (cumulative).
	Counts []uint64
	// Count is the number of observations, Sum their total.
	Count uint64
	Sum   time.Duration
}

// Mean returns the mean observation, or zero if there is none.
func (h LatencyHistogram) Mean() time.Duration {
	if h.Count == 0 {
		return 0
	}
	return h.Sum / time.Duration(h.Count)
}

// Quantile returns the upper bound of the bucket holding quantile q (0..1),
// or the largest bound if it lies beyond them; zero with no observations.
func (h LatencyHistogram) Quantile(q float64) time.Duration {
	if h.Count == 0 || len(h.Bounds) == 0 {
		return 0
	}
	rank := uint64(q * float64(h.Count))
	for i, c := range h.Counts {
		if c >= rank && c > 0 {
			return h.Bounds[i]
		}
	}
	return h.Bounds[len(h.Bounds)-1]
}

// latencyBounds are the upper bounds of the lookup latency buckets.
var latencyBounds = [...]time.Duration{
	100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond,
	10 * time.Millisecond, 25 * time.Millisecond, 50 * time.Millisecond,
	100 * time.Millisecond, 250 * time.Millisecond, 500 * time.Millisecond, time.Second,
}

// latencyHist is a lock-free histogram over latencyBounds (the last bucket
// is +Inf).
type latencyHist struct {
	buckets [len(latencyBounds) + 1]atomic.Uint64
	count   atomic.Uint64
	sum     atomic.Int64
}

func (h *latencyHist) observe(d time.Duration) {
	i := 0
	for i < len(latencyBounds) && d > latencyBounds[i] {
		i++
	}
	h.buckets[i].Add(1)
	h.count.Add(1)
	h.sum.Add(int64(d))
}

func (h *latencyHist) snapshot() LatencyHistogram {
	out := LatencyHistogram{
		Bounds: append([]time.Duration(nil), latencyBounds[:]...),
		Counts: make([]uint64, len(latencyBounds)),
		Sum:    time.Duration(h.sum.Load()),
	}
	var cum uint64
	for i := range latencyBounds {
		cum += h.buckets[i].Load()
		out.Counts[i] = cum
	}
	out.Count = cum + h.buckets[len(latencyBounds)].Load()
	return out
}

// Connection states of redisStats.state.
const (
	stateUnknown int32 = iota // no round trip yet
	stateUp
	stateDown
)

// redisStats holds the store's counters; every field is safe for
// concurrent use.
type redisStats struct {
	written, dropped, evicted, rejected, errors atomic.Uint64
	lookups, lookupErrors, overlayHits          atomic.Uint64
	backlog                                     atomic.Int64
	state                                       atomic.Int32
	lastOK, lastTry                             atomic.Int64 // Unix ns
	lastErr                                     atomic.Pointer[errorAt]
	lookupLatency                               latencyHist
}

type errorAt struct {
	msg string
	at  time.Time
}

func (s *redisStats) lastAttempt() time.Time { return time.Unix(0, s.lastTry.Load()) }

// roundTripOK records a successful round trip to Redis.
func (r *Redis) roundTripOK() {
	now := time.Now().UnixNano()
	r.stats.lastOK.Store(now)
	r.stats.lastTry.Store(now)
	if r.stats.state.Load() == stateUp {
		return
	}
	if prev := r.stats.state.Swap(stateUp); prev == stateDown {
		r.upLog.note(r.log, zapcore.InfoLevel, "session store: Redis reachable again; queued writes are being written")
	}
}

// roundTripFailed records a failed round trip to Redis.
func (r *Redis) roundTripFailed(err error) {
	now := time.Now()
	r.stats.errors.Add(1)
	r.stats.lastTry.Store(now.UnixNano())
	r.stats.lastErr.Store(&errorAt{msg: err.Error(), at: now})
	if r.stats.state.Swap(stateDown) != stateDown {
		r.downLog.note(r.log, zapcore.WarnLevel, "session store: Redis unreachable; writes are queued, lookups fail, calls route by token",
			zap.Error(err))
	}
}

// Stats returns a snapshot of the store's state and counters.
func (r *Redis) Stats() RedisStats {
	s := RedisStats{
		Mode:            r.opts.Mode,
		Connected:       r.stats.state.Load() == stateUp,
		QueueDepth:      len(r.queue),
		QueueCapacity:   cap(r.queue),
		Backlog:         int(r.stats.backlog.Load()),
		BacklogCapacity: r.opts.BacklogSize,
		Pending:         r.overlay.size(),
		Written:         r.stats.written.Load(),
		Dropped:         r.stats.dropped.Load(),
		Evicted:         r.stats.evicted.Load(),
		Rejected:        r.stats.rejected.Load(),
		Errors:          r.stats.errors.Load(),
		Lookups:         r.stats.lookups.Load(),
		LookupErrors:    r.stats.lookupErrors.Load(),
		OverlayHits:     r.stats.overlayHits.Load(),
		LookupLatency:   r.stats.lookupLatency.snapshot(),
	}
	if ns := r.stats.lastOK.Load(); ns != 0 {
		s.LastOK = time.Unix(0, ns)
	}
	if e := r.stats.lastErr.Load(); e != nil {
		s.LastError, s.LastErrorAt = e.msg, e.at
	}
	return s
}
