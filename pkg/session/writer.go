package session

import (
	"context"
	"errors"
	"hash/maphash"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// The write path of the Redis store. Bind, Confirm, Touch and Release never
// wait on the network: each makes an op and puts it on a bounded queue
// (enqueue), and returns. One writer goroutine takes ops off the queue into
// its backlog, and flushes the backlog to Redis in pipelines of up to
// BatchSize scripts, oldest first.
//
//	caller ──enqueue──► queue (QueueSize) ──► backlog (BacklogSize) ──pipeline──► Redis
//	   │                                          │
//	   └──────────── overlay: ops not yet written, by Call-ID ◄── Lookup
//
// Order: ops of one Call-ID reach the queue in the order they were made (the
// overlay shard lock is held across the send), the writer keeps that order,
// and a retry keeps every later op of a Call-ID behind its failed one.
//
// Failure: a pipeline that fails for a reason a retry can fix (connection
// refused or lost, timeout, LOADING, READONLY after a failover, CLUSTERDOWN,
// ...) stays at the head of the backlog and is retried with exponential
// backoff, so writes made during an outage are written when Redis returns.
// Between attempts the writer keeps taking ops off the queue, so callers are
// not refused; when the backlog is full the oldest op is given up (Evicted).
// An op Redis rejects for good (a script error) is counted (Rejected) and
// dropped. Memory is therefore bounded by QueueSize + BacklogSize ops however
// long an outage lasts, and the store adds no goroutine per write or per
// retry: only the writer (and, with OnActive, its mirror's sweeper).
//
// Overlay: until an op is written (or given up) it stays in a map by Call-ID,
// and Lookup replays the Call-ID's pending ops over what Redis returns, so an
// instance always sees its own writes, even during an outage.

// opKind is the kind of a queued write.
type opKind uint8

const (
	opBind opKind = iota + 1
	opConfirm
	opTouch
	opRelease
)

func (k opKind) String() string {
	switch k {
	case opBind:
		return "bind"
	case opConfirm:
		return "confirm"
	case opTouch:
		return "touch"
	case opRelease:
		return "release"
	}
	return "unknown"
}

// script is the op code the write script expects.
func (k opKind) script() string {
	switch k {
	case opBind:
		return "b"
	case opConfirm:
		return "c"
	case opTouch:
		return "t"
	}
	return "r"
}

// op is one queued write. It is immutable once enqueued: the writer and
// Lookup read it concurrently.
type op struct {
	callID   string // a copy, never the caller's (it may pin a SIP message)
	node     string // interned; Bind and Confirm
	via      string // interned; Bind
	now      int64  // when the Store call was made, Unix ms
	exp      int64  // when the binding expires, Unix ms
	attempt  int32  // Bind
	kind     opKind
	outbound bool // Bind
}

// record is a dialog as stored in Redis, or as an overlay replay computes it.
type record struct {
	node     string
	via      string
	exp      int64 // Unix ms
	attempt  int
	state    DialogState
	outbound bool
	present  bool
}

// live reports whether r is a binding at Unix ms now.
func (r *record) live(now int64) bool { return r.present && r.exp > now }

// apply changes r as the write script changes the stored dialog, so that a
// replay of pending ops over what Redis returned gives what Redis will hold
// once they are written. Like the script, it is idempotent: ops already
// applied in Redis may be replayed without harm.
func (r *record) apply(o *op) {
	live := r.live(o.now)
	switch o.kind {
	case opBind:
		*r = record{node: o.node, via: o.via, exp: o.exp, attempt: int(o.attempt), state: Early, outbound: o.outbound, present: true}
	case opConfirm:
		if !live {
			*r = record{present: true}
		}
		r.node, r.state, r.exp = o.node, Confirmed, o.exp
	case opTouch:
		if live && r.state != Released && o.exp > r.exp {
			r.exp = o.exp
		}
	case opRelease:
		if live {
			r.state, r.exp = Released, o.exp
		}
	}
}

// overlayShards is the number of independently locked parts of the overlay.
const overlayShards = 64

// overlay holds, by Call-ID, the ops that are queued or in the backlog.
type overlay struct {
	seed   maphash.Seed
	shards [overlayShards]overlayShard
}

type overlayShard struct {
	mu sync.Mutex
	m  map[string][]*op // Call-ID → pending ops, oldest first
	_  [40]byte         // keeps neighbouring shards' locks off one cache line
}

func newOverlay() *overlay {
	ov := &overlay{seed: maphash.MakeSeed()}
	for i := range ov.shards {
		ov.shards[i].m = make(map[string][]*op)
	}
	return ov
}

func (ov *overlay) shard(callID string) *overlayShard {
	return &ov.shards[maphash.String(ov.seed, callID)%overlayShards]
}

// pending appends the pending ops of callID to buf and returns it.
func (ov *overlay) pending(callID string, buf []*op) []*op {
	s := ov.shard(callID)
	s.mu.Lock()
	buf = append(buf, s.m[callID]...)
	s.mu.Unlock()
	return buf
}

// done forgets o: it was written or given up.
func (ov *overlay) done(o *op) {
	s := ov.shard(o.callID)
	s.mu.Lock()
	ops := s.m[o.callID]
	for i, p := range ops {
		if p == o {
			copy(ops[i:], ops[i+1:])
			ops[len(ops)-1] = nil
			ops = ops[:len(ops)-1]
			break
		}
	}
	if len(ops) == 0 {
		delete(s.m, o.callID)
	} else {
		s.m[o.callID] = ops
	}
	s.mu.Unlock()
}

// size returns the number of Call-IDs with pending ops.
func (ov *overlay) size() int {
	n := 0
	for i := range ov.shards {
		s := &ov.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}

// errQueueFull is wrapped, with ErrUnavailable, by a write refused because
// the queue was full.
var errQueueFull = errors.New("write queue full")

// enqueue hands o to the writer, or refuses it at once if the queue is full.
// It never blocks.
func (r *Redis) enqueue(o *op) error {
	s := r.overlay.shard(o.callID)
	s.mu.Lock()
	select {
	case r.queue <- o:
		s.m[o.callID] = append(s.m[o.callID], o)
		s.mu.Unlock()
		return nil
	default:
		s.mu.Unlock()
	}
	r.stats.dropped.Add(1)
	r.dropLog.note(r.log, zapcore.WarnLevel, "session store: Redis write queue full; writes dropped (calls go on, routed by token)",
		zap.Int("queue_size", cap(r.queue)))
	return &opError{op: o.kind.String(), err: errQueueFull}
}

// opError is the error of a refused write; it wraps ErrUnavailable.
type opError struct {
	op  string
	err error
}

func (e *opError) Error() string { return "session: redis " + e.op + ": " + e.err.Error() }

func (e *opError) Unwrap() []error { return []error{ErrUnavailable, e.err} }

// Writer timing.
const (
	// minBackoff and maxBackoff bound the wait between retries of a failed
	// pipeline; the wait doubles on each failure.
	minBackoff = 50 * time.Millisecond
	maxBackoff = time.Second
	// pingEvery is how often an idle writer checks that Redis answers, so
	// that Healthy and Stats follow the server even without traffic.
	pingEvery = time.Second
	// trimEvery is how often the writer trims expired members from the
	// active zsets (ActiveCounts trims too).
	trimEvery = 15 * time.Second
	// closeFlushTimeout bounds Close's last flush, from the call of Close.
	closeFlushTimeout = 2 * time.Second
)

// writer is the state of the writer goroutine; only that goroutine touches
// it (and Close, after it has returned).
type writer struct {
	backlog  ring
	batch    []*op
	cmds     []*redis.Cmd
	kept     []*op
	tainted  map[string]struct{}
	backoff  time.Duration
	nextTry  time.Time
	lastPing time.Time
	lastTrim time.Time
	reloaded bool // scripts were loaded since the last success or backoff
}

// run is the writer goroutine. It returns when ctx is done; a panic is
// logged with its stack and the loop starts again, so a bug costs writes,
// not the store.
func (r *Redis) run(ctx context.Context) {
	defer close(r.writerDone)
	for !r.runOnce(ctx) {
	}
}

func (r *Redis) runOnce(ctx context.Context) (stopped bool) {
	defer func() {
		if v := recover(); v != nil {
			r.log.Error("session store: Redis writer panicked; restarting it",
				zap.Any("panic", v), zap.ByteString("stack", debug.Stack()))
			stopped = ctx.Err() != nil
		}
	}()
	w := &r.w
	tick := time.NewTicker(pingEvery)
	defer tick.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		if ctx.Err() != nil {
			return true
		}
		r.housekeep(ctx)
		switch {
		case w.backlog.len() == 0:
			select {
			case o := <-r.queue:
				r.push(o)
			case <-tick.C:
				continue
			case <-ctx.Done():
				return true
			}
		case time.Until(w.nextTry) > 0:
			// Waiting to retry: keep taking ops, so that callers are not
			// refused while Redis is away.
			timer.Reset(time.Until(w.nextTry))
			select {
			case o := <-r.queue:
				r.push(o)
			case <-timer.C:
			case <-tick.C:
			case <-ctx.Done():
				return true
			}
			timer.Stop()
		}
		r.drain()
		if w.backlog.len() > 0 && !time.Now().Before(w.nextTry) {
			r.flush(ctx)
		}
	}
}

// drain moves every op waiting in the queue into the backlog.
func (r *Redis) drain() {
	for {
		select {
		case o := <-r.queue:
			r.push(o)
		default:
			return
		}
	}
}

// push appends o to the backlog, giving up the oldest op if it is full.
func (r *Redis) push(o *op) {
	if old, ok := r.w.backlog.pushEvict(o); ok {
		r.overlay.done(old)
		r.stats.evicted.Add(1)
		r.evictLog.note(r.log, zapcore.WarnLevel, "session store: Redis unreachable too long; oldest queued writes given up",
			zap.Int("backlog_size", r.w.backlog.cap()))
	}
	r.stats.backlog.Store(int64(r.w.backlog.len()))
}

// flush writes up to BatchSize ops from the head of the backlog in one
// pipeline and settles each: written, rejected for good, or kept for a retry.
func (r *Redis) flush(ctx context.Context) {
	w := &r.w
	w.batch = w.backlog.peek(r.opts.BatchSize, w.batch[:0])
	wall := r.nowMs()
	pipe := r.client.Pipeline()
	w.cmds = w.cmds[:0]
	for _, o := range w.batch {
		sk := r.keys.shard(o.callID)
		w.cmds = append(w.cmds, pipe.EvalSha(ctx, writeScript.Hash(),
			[]string{sk.dialog + o.callID, sk.nodes},
			o.kind.script(), o.callID, sk.active, o.now, wall, o.exp, o.node, o.attempt, boolArg(o.outbound), o.via))
	}
	_, execErr := pipe.Exec(ctx)

	w.kept = w.kept[:0]
	clear(w.tainted)
	var retryErr error
	noScript := false
	written := 0
	for i, o := range w.batch {
		err := w.cmds[i].Err()
		if _, ok := w.tainted[o.callID]; ok {
			// An earlier op of this Call-ID failed: replay this one after
			// it, even if it succeeded (ops are idempotent), to keep order.
			w.kept = append(w.kept, o)
			continue
		}
		switch {
		case err == nil:
			written++
			r.overlay.done(o)
		case !retryable(err):
			r.stats.rejected.Add(1)
			r.rejectLog.note(r.log, zapcore.ErrorLevel, "session store: Redis rejected a write", zap.String("op", o.kind.String()), zap.Error(err))
			r.overlay.done(o)
		default:
			if redis.HasErrorPrefix(err, "NOSCRIPT") {
				noScript = true
			} else if retryErr == nil {
				retryErr = err
			}
			if w.tainted == nil {
				w.tainted = make(map[string]struct{})
			}
			w.tainted[o.callID] = struct{}{}
			w.kept = append(w.kept, o)
		}
	}
	w.backlog.replaceFront(len(w.batch), w.kept)
	r.stats.backlog.Store(int64(w.backlog.len()))
	r.stats.written.Add(uint64(written))
	clear(w.batch)

	if noScript && !w.reloaded {
		// A server without our scripts (restarted, failed over, flushed):
		// load them, and if nothing else failed, retry at once.
		w.reloaded = true
		if err := r.loadScripts(ctx); err == nil && retryErr == nil {
			r.roundTripOK()
			return
		}
	}
	switch {
	case len(w.kept) == 0:
		r.roundTripOK()
		w.backoff, w.nextTry, w.reloaded = 0, time.Time{}, false
	case ctx.Err() != nil:
		// Close interrupted the pipeline; the kept ops go to its last flush.
	default:
		if retryErr == nil {
			retryErr = execErr
		}
		r.roundTripFailed(retryErr)
		if written == 0 {
			r.retryLater()
		}
		// Otherwise part of Redis answered (a cluster with one master
		// away): go on at once, so that the rest keeps being written.
	}
}

// retryLater schedules the next flush after the backoff, doubling it; that
// flush may load the scripts again if it finds them missing.
func (r *Redis) retryLater() {
	w := &r.w
	w.backoff = min(max(2*w.backoff, minBackoff), maxBackoff)
	w.nextTry = time.Now().Add(w.backoff)
	w.reloaded = false
}

// housekeep pings an idle server and trims the active zsets when due.
func (r *Redis) housekeep(ctx context.Context) {
	w := &r.w
	now := time.Now()
	if w.backlog.len() == 0 && now.Sub(w.lastPing) >= pingEvery && now.Sub(r.stats.lastAttempt()) >= pingEvery {
		w.lastPing = now
		pctx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout)
		err := r.client.Ping(pctx).Err()
		cancel()
		switch {
		case ctx.Err() != nil:
		case err != nil:
			r.roundTripFailed(err)
		default:
			r.roundTripOK()
		}
	}
	if now.Sub(w.lastTrim) >= trimEvery && r.stats.state.Load() == stateUp {
		w.lastTrim = now
		tctx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout)
		if _, err := r.sweep(tctx); err != nil {
			r.log.Debug("session store: trimming active sets failed", zap.Error(err))
		}
		cancel()
	}
}

// finalFlush writes what is left, for Close: it runs after the writer has
// returned, and gives up at deadline.
func (r *Redis) finalFlush(deadline time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	r.w.nextTry = time.Time{}
	for ctx.Err() == nil {
		r.drain()
		if r.w.backlog.len() == 0 {
			return
		}
		r.flush(ctx)
		if wait := time.Until(r.w.nextTry); wait > 0 {
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
		}
	}
	if n := r.w.backlog.len() + len(r.queue); n > 0 {
		r.log.Warn("session store: Redis writes not written at close", zap.Int("writes", n))
	}
}

// loadScripts loads the store's scripts into Redis (every master of a
// cluster).
func (r *Redis) loadScripts(ctx context.Context) error {
	for _, s := range []*redis.Script{writeScript, sweepScript, rehomeScript} {
		if err := s.Load(ctx, r.client).Err(); err != nil {
			return err
		}
	}
	return nil
}

// retryable reports whether a failed command may succeed if sent again:
// anything but an error reply, and the error replies of a server that is
// starting, failing over or missing our scripts.
func retryable(err error) bool {
	var re redis.Error
	if !errors.As(err, &re) {
		return true
	}
	for _, p := range []string{"NOSCRIPT", "LOADING", "READONLY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "BUSY", "NOREPLICAS", "MOVED", "ASK", "OOM"} {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

func boolArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// ring is a bounded FIFO of ops.
type ring struct {
	buf  []*op
	head int
	n    int
}

func newRing(size int) ring { return ring{buf: make([]*op, size)} }

func (q *ring) len() int { return q.n }
func (q *ring) cap() int { return len(q.buf) }

// pushEvict appends o; if the ring was full it first removes and returns the
// oldest op.
func (q *ring) pushEvict(o *op) (evicted *op, ok bool) {
	if q.n == len(q.buf) {
		evicted, ok = q.buf[q.head], true
		q.buf[q.head] = nil
		q.head = (q.head + 1) % len(q.buf)
		q.n--
	}
	q.buf[(q.head+q.n)%len(q.buf)] = o
	q.n++
	return evicted, ok
}

// peek appends up to max ops from the head to dst.
func (q *ring) peek(max int, dst []*op) []*op {
	for i := 0; i < q.n && i < max; i++ {
		dst = append(dst, q.buf[(q.head+i)%len(q.buf)])
	}
	return dst
}

// replaceFront removes the first n ops and puts kept (at most n) back at the
// head, in order.
func (q *ring) replaceFront(n int, kept []*op) {
	for i := range n {
		q.buf[(q.head+i)%len(q.buf)] = nil
	}
	q.head = (q.head + n - len(kept)) % len(q.buf)
	for i, o := range kept {
		q.buf[(q.head+i)%len(q.buf)] = o
	}
	q.n += len(kept) - n
}

// sampledLog logs a recurring condition at most once per logEvery, with the
// number of occurrences since the last line.
type sampledLog struct {
	count atomic.Uint64
	last  atomic.Int64 // Unix ns of the last line
}

// logEvery is the minimum interval between two lines of one sampledLog.
const logEvery = 10 * time.Second

func (s *sampledLog) note(log *zap.Logger, level zapcore.Level, msg string, fields ...zap.Field) {
	s.count.Add(1)
	now := time.Now().UnixNano()
	last := s.last.Load()
	if now-last < int64(logEvery) || !s.last.CompareAndSwap(last, now) {
		return
	}
	n := s.count.Swap(0)
	if ce := log.Check(level, msg); ce != nil {
		ce.Write(append(fields, zap.Uint64("count", n), zap.Duration("window", logEvery))...)
	}
}
