package session

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"
)

// Redis deployment modes (RedisOptions.Mode).
const (
	RedisStandalone = "standalone"
	RedisSentinel   = "sentinel"
	RedisCluster    = "cluster"
)

// RedisOptions configures NewRedis. A zero field takes the default given in
// its comment.
type RedisOptions struct {
	// Mode is RedisStandalone, RedisSentinel or RedisCluster. Empty picks
	// one from the other fields, as go-redis's UniversalClient does:
	// sentinel when MasterName is set, cluster when Addrs has more than one
	// address, standalone otherwise. Set it to run a cluster from a single
	// seed address.
	Mode string
	// Addrs are host:port addresses: the server (standalone), the sentinels
	// (sentinel), or seed nodes (cluster).
	Addrs []string
	// MasterName is the name the sentinels know the master by; sentinel
	// mode only.
	MasterName string
	// Username and Password authenticate to the Redis servers (ACL user, or
	// requirepass with an empty Username).
	Username, Password string
	// SentinelUsername and SentinelPassword authenticate to the sentinels,
	// when they require it.
	SentinelUsername, SentinelPassword string
	// DB is the database number; standalone and sentinel only.
	DB int
	// TLS connects with TLS (TLS 1.2 or later, the system roots, server name
	// from the address), or with TLSConfig when it is set.
	TLS bool
	// TLSConfig, when set, replaces the default TLS configuration; it needs
	// TLS.
	TLSConfig *tls.Config
	// KeyPrefix starts every key (default "sipb"); it must not contain
	// braces, which would change Redis Cluster hash slots.
	KeyPrefix string
	// DialTimeout bounds a connect (default 1s).
	DialTimeout time.Duration
	// ReadTimeout and WriteTimeout bound a socket read or write (default 1s
	// each); a hung server fails a pipeline after them.
	ReadTimeout, WriteTimeout time.Duration
	// PoolSize bounds the connections per server used by Lookup, Rehome and
	// ActiveCounts (default: go-redis's, 10 per CPU). The writer's pipelines
	// use go-redis's small separate pipeline pool.
	PoolSize int
	// QueueSize bounds the write queue (default 65536). When it is full, a
	// write is refused at once with ErrUnavailable and counted (Dropped).
	QueueSize int
	// BacklogSize bounds the writes the writer holds while Redis is
	// unreachable, to write them when it is back (default: QueueSize). Beyond
	// it the oldest are given up and counted (Evicted).
	BacklogSize int
	// BatchSize is the most writes sent in one pipeline (default 256).
	BatchSize int
	// LookupTimeout bounds a Lookup or Rehome round trip (default 200ms).
	LookupTimeout time.Duration
	// Now is the clock (default time.Now). Expiry times stored in Redis are
	// Unix milliseconds of this clock, so instances sharing a Redis need
	// synchronised clocks (NTP); skew shifts expiry by as much.
	Now func() time.Time
	// OnActive, when set, receives +1 and -1 per node exactly as
	// MemoryOptions.OnActive does, for the Bind, Confirm, Touch and Release
	// calls of this instance only: it is fed from a local memory store that
	// mirrors them, so it works during Redis outages and never goes negative,
	// but a call confirmed here and released through another instance stays
	// counted here until its TTL runs out. ActiveCounts gives the view shared
	// by all instances.
	OnActive func(nodeID string, delta int)
	// Logger receives the store's logs (default: none). Recurring conditions
	// (queue full, writes given up, Redis down) are logged at most once per
	// 10 s with a count.
	Logger *zap.Logger
}

// Defaults of RedisOptions, applied by setDefaults.
const (
	defaultKeyPrefix     = "sipb"
	defaultRedisTimeout  = time.Second
	defaultQueueSize     = 65536
	defaultBatchSize     = 256
	defaultLookupTimeout = 200 * time.Millisecond
)

// Validate reports the first option NewRedis cannot use, naming it. Zero
// values are valid where they mean a default.
func (o RedisOptions) Validate() error {
	if len(o.Addrs) == 0 {
		return errors.New("session: redis addrs: at least one address is required")
	}
	for _, a := range o.Addrs {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("session: redis addrs: %q is not host:port: %w", a, err)
		}
	}
	switch o.mode() {
	case RedisStandalone:
		if len(o.Addrs) != 1 {
			return fmt.Errorf("session: redis addrs: standalone mode takes one address, got %d", len(o.Addrs))
		}
		if o.MasterName != "" {
			return errors.New("session: redis master_name is only for sentinel mode")
		}
	case RedisSentinel:
		if o.MasterName == "" {
			return errors.New("session: redis master_name is required in sentinel mode")
		}
	case RedisCluster:
		if o.MasterName != "" {
			return errors.New("session: redis master_name is only for sentinel mode")
		}
		if o.DB != 0 {
			return fmt.Errorf("session: redis db (%d) must be 0 in cluster mode", o.DB)
		}
	default:
		return fmt.Errorf("session: redis mode %q is not one of standalone, sentinel, cluster", o.Mode)
	}
	switch {
	case o.DB < 0:
		return fmt.Errorf("session: redis db (%d) must not be negative", o.DB)
	case o.TLSConfig != nil && !o.TLS:
		return errors.New("session: redis tls_config is set but tls is off")
	case strings.ContainsAny(o.KeyPrefix, "{}"):
		return fmt.Errorf("session: redis key_prefix %q must not contain braces", o.KeyPrefix)
	case o.DialTimeout < 0:
		return fmt.Errorf("session: redis dial_timeout (%s) must not be negative", o.DialTimeout)
	case o.ReadTimeout < 0:
		return fmt.Errorf("session: redis read_timeout (%s) must not be negative", o.ReadTimeout)
	case o.WriteTimeout < 0:
		return fmt.Errorf("session: redis write_timeout (%s) must not be negative", o.WriteTimeout)
	case o.LookupTimeout < 0:
		return fmt.Errorf("session: redis lookup_timeout (%s) must not be negative", o.LookupTimeout)
	case o.PoolSize < 0:
		return fmt.Errorf("session: redis pool_size (%d) must not be negative", o.PoolSize)
	case o.QueueSize < 0:
		return fmt.Errorf("session: redis queue_size (%d) must not be negative", o.QueueSize)
	case o.BacklogSize < 0:
		return fmt.Errorf("session: redis backlog_size (%d) must not be negative", o.BacklogSize)
	case o.BatchSize < 0:
		return fmt.Errorf("session: redis batch_size (%d) must not be negative", o.BatchSize)
	}
	return nil
}

// mode returns the effective mode: Mode, or the one the other fields imply.
func (o RedisOptions) mode() string {
	switch {
	case o.Mode != "":
		return o.Mode
	case o.MasterName != "":
		return RedisSentinel
	case len(o.Addrs) > 1:
		return RedisCluster
	}
	return RedisStandalone
}

// setDefaults fills the zero fields of o; it is the only place defaults are
// applied.
func (o *RedisOptions) setDefaults() {
	o.Mode = o.mode()
	if o.KeyPrefix == "" {
		o.KeyPrefix = defaultKeyPrefix
	}
	if o.DialTimeout == 0 {
		o.DialTimeout = defaultRedisTimeout
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = defaultRedisTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = defaultRedisTimeout
	}
	if o.QueueSize == 0 {
		o.QueueSize = defaultQueueSize
	}
	if o.BacklogSize == 0 {
		o.BacklogSize = o.QueueSize
	}
	if o.BatchSize == 0 {
		o.BatchSize = defaultBatchSize
	}
	if o.LookupTimeout == 0 {
		o.LookupTimeout = defaultLookupTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.TLS && o.TLSConfig == nil {
		o.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
}

// Redis is the Store shared by every balancer instance: bindings live in
// Redis (standalone, Sentinel or Cluster), so any instance can route any
// call's in-dialog requests. The key layout is described in redis_keys.go
// and REDIS.md.
//
// Writes never wait on the network: they are queued for a single writer
// goroutine that pipelines them (writer.go), and while Redis is unreachable
// they are held, bounded, and written when it returns. Lookup reads Redis
// with a deadline (LookupTimeout) and sees this instance's own writes that
// are not written yet. Nothing blocks or grows without bound during an
// outage; Healthy and Stats report it.
//
// A Redis must be created with NewRedis and closed with Close.
type Redis struct {
	opts    RedisOptions
	client  redis.UniversalClient
	keys    *keyspace
	nodes   nodeTable
	vias    nodeTable
	log     *zap.Logger
	local   *Memory // mirrors this instance's writes for OnActive; nil without it
	queue   chan *op
	overlay *overlay
	w       writer // the writer goroutine's own state
	stats   redisStats

	dropLog, evictLog, rejectLog, downLog, upLog sampledLog

	closed     atomic.Bool
	closeOnce  sync.Once
	closeErr   error
	cancel     context.CancelFunc
	writerDone chan struct{}
}

// NewRedis returns a Redis store and starts its writer goroutine, which
// Close stops. It does not wait for Redis: a store made while Redis is down
// works (writes queue, lookups fail with ErrUnavailable) and catches up when
// Redis comes. It returns an error if opts fails Validate.
func NewRedis(opts RedisOptions) (*Redis, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts.setDefaults()
	opts.Addrs = slices.Clone(opts.Addrs)
	u := &redis.UniversalOptions{
		Addrs:            opts.Addrs,
		MasterName:       opts.MasterName,
		ClientName:       "sipbalancer",
		Username:         opts.Username,
		Password:         opts.Password,
		SentinelUsername: opts.SentinelUsername,
		SentinelPassword: opts.SentinelPassword,
		DB:               opts.DB,
		TLSConfig:        opts.TLSConfig,
		DialTimeout:      opts.DialTimeout,
		ReadTimeout:      opts.ReadTimeout,
		WriteTimeout:     opts.WriteTimeout,
		PoolSize:         opts.PoolSize,
		// Deadlines of our contexts (LookupTimeout) bound socket reads.
		ContextTimeoutEnabled: true,
		// One quick retry covers a pooled connection that died with its
		// server; the writer does its own retrying, with backoff.
		MaxRetries:         1,
		MinRetryBackoff:    5 * time.Millisecond,
		MaxRetryBackoff:    50 * time.Millisecond,
		DialerRetries:      1,
		DialerRetryTimeout: 50 * time.Millisecond,
		// Maintenance notifications are a Redis Cloud feature; the
		// handshake is noise elsewhere.
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled},
	}
	var client redis.UniversalClient
	switch opts.Mode {
	case RedisSentinel:
		client = redis.NewFailoverClient(u.Failover())
	case RedisCluster:
		client = redis.NewClusterClient(u.Cluster())
	default:
		client = redis.NewClient(u.Simple())
	}
	r := &Redis{
		opts:       opts,
		client:     client,
		keys:       newKeyspace(opts.KeyPrefix),
		log:        opts.Logger.Named("session.redis"),
		queue:      make(chan *op, opts.QueueSize),
		overlay:    newOverlay(),
		w:          writer{backlog: newRing(opts.BacklogSize)},
		writerDone: make(chan struct{}),
	}
	r.nodes.init()
	r.vias.init()
	if opts.OnActive != nil {
		r.local = NewMemory(MemoryOptions{Now: opts.Now, OnActive: opts.OnActive})
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.run(ctx)
	return r, nil
}

// Mode returns the deployment mode in use: RedisStandalone, RedisSentinel or
// RedisCluster.
func (r *Redis) Mode() string { return r.opts.Mode }

// Bind queues an early binding of b.CallID to b.NodeID for ttl, replacing
// any binding of the Call-ID (its Via too: an empty b.Via clears it).
// b.State and b.Expires are ignored. It returns
// at once; ErrUnavailable means the queue was full and the write is lost.
func (r *Redis) Bind(ctx context.Context, b Binding, ttl time.Duration) error {
	if err := r.enter(ctx, "bind"); err != nil {
		return err
	}
	switch {
	case b.CallID == "":
		return errors.New("session: redis bind: empty Call-ID")
	case b.NodeID == "":
		return errors.New("session: redis bind: empty node ID")
	case b.Attempt < 0 || b.Attempt > 1<<31-1:
		return fmt.Errorf("session: redis bind: attempt %d out of range", b.Attempt)
	case ttl <= 0:
		return fmt.Errorf("session: redis bind: ttl %s must be positive", ttl)
	}
	if r.local != nil {
		_ = r.local.Bind(ctx, b, ttl)
	}
	now := r.nowMs()
	return r.enqueue(&op{
		kind:     opBind,
		callID:   strings.Clone(b.CallID),
		node:     r.node(b.NodeID),
		via:      r.via(b.Via),
		now:      now,
		exp:      now + millis(ttl),
		attempt:  int32(b.Attempt),
		outbound: b.Outbound,
	})
}

// Confirm queues marking the binding of callID Confirmed on nodeID, expiring
// ttl from now; it creates the binding if there is none (with an empty Via)
// and keeps Attempt, Outbound and Via of a live one.
func (r *Redis) Confirm(ctx context.Context, callID, nodeID string, ttl time.Duration) error {
	if err := r.enter(ctx, "confirm"); err != nil {
		return err
	}
	switch {
	case callID == "":
		return errors.New("session: redis confirm: empty Call-ID")
	case nodeID == "":
		return errors.New("session: redis confirm: empty node ID")
	case ttl <= 0:
		return fmt.Errorf("session: redis confirm: ttl %s must be positive", ttl)
	}
	if r.local != nil {
		_ = r.local.Confirm(ctx, callID, nodeID, ttl)
	}
	now := r.nowMs()
	return r.enqueue(&op{kind: opConfirm, callID: strings.Clone(callID), node: r.node(nodeID), now: now, exp: now + millis(ttl)})
}

// Touch queues extending the binding of callID to expire no sooner than ttl
// from now. It never shortens a binding, revives a Released one or creates
// one; since it does not wait for Redis, it returns nil for a Call-ID with
// no binding.
func (r *Redis) Touch(ctx context.Context, callID string, ttl time.Duration) error {
	if err := r.enter(ctx, "touch"); err != nil {
		return err
	}
	if callID == "" {
		return ErrNotFound
	}
	if r.local != nil {
		_ = r.local.Touch(ctx, callID, ttl)
	}
	now := r.nowMs()
	return r.enqueue(&op{kind: opTouch, callID: strings.Clone(callID), now: now, exp: now + millis(ttl)})
}

// Release queues marking the binding of callID Released, expiring linger
// from now (a linger of zero or less removes it). It does not create a
// binding; since it does not wait for Redis, it returns nil for a Call-ID
// with no binding.
func (r *Redis) Release(ctx context.Context, callID string, linger time.Duration) error {
	if err := r.enter(ctx, "release"); err != nil {
		return err
	}
	if callID == "" {
		return ErrNotFound
	}
	if r.local != nil {
		_ = r.local.Release(ctx, callID, linger)
	}
	now := r.nowMs()
	return r.enqueue(&op{kind: opRelease, callID: strings.Clone(callID), now: now, exp: now + millis(linger)})
}

// Lookup returns the binding of callID, or ErrNotFound. It reads Redis
// within LookupTimeout and replays over the answer this instance's writes of
// the Call-ID that are not written yet; when those start with a Bind, Redis
// is not asked at all. An unreachable or slow Redis gives an error wrapping
// ErrUnavailable; a done ctx gives ctx's error.
func (r *Redis) Lookup(ctx context.Context, callID string) (Binding, error) {
	if err := r.enter(ctx, "lookup"); err != nil {
		return Binding{}, err
	}
	if callID == "" {
		return Binding{}, ErrNotFound
	}
	now := r.nowMs()
	var buf [4]*op
	ops := r.overlay.pending(callID, buf[:0])
	var rec record
	if i := lastBind(ops); i >= 0 {
		ops = ops[i:]
		r.stats.overlayHits.Add(1)
	} else {
		var err error
		if rec, err = r.read(ctx, callID); err != nil {
			return Binding{}, err
		}
	}
	for _, o := range ops {
		rec.apply(o)
	}
	if !rec.live(now) {
		return Binding{}, ErrNotFound
	}
	return Binding{
		CallID:   callID,
		NodeID:   rec.node,
		Attempt:  rec.attempt,
		Outbound: rec.outbound,
		Via:      rec.via,
		State:    rec.state,
		Expires:  time.UnixMilli(rec.exp),
	}, nil
}

// lastBind returns the index of the last Bind in ops, or -1: a Bind replaces
// everything before it, so the ops from there on say it all.
func lastBind(ops []*op) int {
	for i := len(ops) - 1; i >= 0; i-- {
		if ops[i].kind == opBind {
			return i
		}
	}
	return -1
}

// read fetches the stored dialog of callID within LookupTimeout.
func (r *Redis) read(ctx context.Context, callID string) (record, error) {
	sk := r.keys.shard(callID)
	rctx, cancel := context.WithTimeout(ctx, r.opts.LookupTimeout)
	defer cancel()
	start := time.Now()
	vals, err := r.client.HMGet(rctx, sk.dialog+callID, "n", "a", "s", "o", "x", "v").Result()
	r.stats.lookups.Add(1)
	r.stats.lookupLatency.observe(time.Since(start))
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return record{}, fmt.Errorf("session: redis lookup: %w", cerr)
		}
		if r.closed.Load() {
			return record{}, fmt.Errorf("session: redis lookup: closed: %w", ErrUnavailable)
		}
		r.stats.lookupErrors.Add(1)
		r.roundTripFailed(err)
		return record{}, fmt.Errorf("session: redis lookup: %w: %w", ErrUnavailable, err)
	}
	r.roundTripOK()
	return parseRecord(vals), nil
}

// parseRecord reads an HMGET n a s o x v reply. Anything but a complete,
// well-formed dialog reads as no binding: a wrong answer would route a
// request to the wrong node, a missing one gets a 481. The Via (v) is
// optional: a dialog written without one (by Confirm, or by a version that
// did not store it) has an empty Via.
func parseRecord(vals []any) record {
	if len(vals) != 6 {
		return record{}
	}
	var f [6]string
	for i, v := range vals {
		s, ok := v.(string)
		if !ok && (i < 5 || v != nil) {
			return record{}
		}
		f[i] = s
	}
	attempt, err1 := strconv.Atoi(f[1])
	state, err2 := strconv.Atoi(f[2])
	exp, err3 := strconv.ParseInt(f[4], 10, 64)
	if f[0] == "" || err1 != nil || err2 != nil || err3 != nil || state < int(Early) || state > int(Released) {
		return record{}
	}
	return record{node: f[0], via: f[5], attempt: attempt, state: DialogState(state), outbound: f[3] == "1", exp: exp, present: true}
}

// ActiveCounts returns the number of live Confirmed bindings of each node,
// across every instance sharing the Redis: the members of the active zsets
// whose expiry has not passed. It trims the expired ones on the way. Nodes
// with none are absent. It costs one pipeline of one script per key shard.
func (r *Redis) ActiveCounts(ctx context.Context) (map[string]int64, error) {
	if err := r.enter(ctx, "active counts"); err != nil {
		return nil, err
	}
	counts, err := r.sweep(ctx)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, fmt.Errorf("session: redis active counts: %w", cerr)
		}
		r.roundTripFailed(err)
		return nil, fmt.Errorf("session: redis active counts: %w: %w", ErrUnavailable, err)
	}
	r.roundTripOK()
	return counts, nil
}

// sweep runs sweepScript on every shard and sums the counts.
func (r *Redis) sweep(ctx context.Context) (map[string]int64, error) {
	now := r.nowMs()
	cmds := make([]*redis.Cmd, keyShards)
	for attempt := 0; ; attempt++ {
		pipe := r.client.Pipeline()
		for i := range r.keys.shards {
			sk := &r.keys.shards[i]
			cmds[i] = pipe.EvalSha(ctx, sweepScript.Hash(), []string{sk.nodes}, sk.active, now)
		}
		_, err := pipe.Exec(ctx)
		if err != nil && attempt == 0 && anyNoScript(cmds) {
			if lerr := r.loadScripts(ctx); lerr != nil {
				return nil, lerr
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		out := make(map[string]int64)
		for _, c := range cmds {
			vals, err := c.Slice()
			if err != nil {
				return nil, err
			}
			for j := 0; j+1 < len(vals); j += 2 {
				node, _ := vals[j].(string)
				n, _ := vals[j+1].(int64)
				if node != "" && n > 0 {
					out[node] += n
				}
			}
		}
		return out, nil
	}
}

func anyNoScript(cmds []*redis.Cmd) bool {
	for _, c := range cmds {
		if redis.HasErrorPrefix(c.Err(), "NOSCRIPT") {
			return true
		}
	}
	return false
}

// Healthy reports whether the store works as it should: the last round trip
// to Redis succeeded and writes are not piling up (less than half of the
// queue and backlog in use). The balancer keeps working when it is false;
// /readyz reports it as degraded.
func (r *Redis) Healthy() bool {
	if r.closed.Load() || r.stats.state.Load() != stateUp {
		return false
	}
	waiting := len(r.queue) + int(r.stats.backlog.Load())
	return waiting < (cap(r.queue)+r.opts.BacklogSize)/2
}

// Close stops the writer, writes what is still queued (giving up 2 s after
// Close was called, or after ReadTimeout if that is longer, so that a dead
// or hung Redis does not hold up shutdown), and closes the connections. Later calls of the Store methods return ErrUnavailable.
// Close is idempotent.
func (r *Redis) Close() error {
	r.closeOnce.Do(func() {
		deadline := time.Now().Add(closeFlushTimeout)
		r.closed.Store(true)
		r.cancel()
		// A pipeline in flight on a hung server ends by ReadTimeout.
		<-r.writerDone
		r.finalFlush(deadline)
		if r.local != nil {
			_ = r.local.Close()
		}
		r.closeErr = r.client.Close()
	})
	return r.closeErr
}

// enter is the check at the top of every Store method: a done context or a
// closed store fails the call before it touches any state.
func (r *Redis) enter(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("session: redis %s: %w", op, err)
	}
	if r.closed.Load() {
		return fmt.Errorf("session: redis %s: closed: %w", op, ErrUnavailable)
	}
	return nil
}

func (r *Redis) nowMs() int64 { return r.opts.Now().UnixMilli() }

// node returns the interned copy of a node ID, so that queued writes neither
// pin the caller's string nor allocate one per write.
func (r *Redis) node(id string) string { return r.nodes.id(r.nodes.intern(id)) }

// via returns the interned copy of a Via sent-by, as node does for node IDs;
// the sent-bys are the instances' own addresses, so the table stays tiny.
func (r *Redis) via(sentBy string) string {
	if sentBy == "" {
		return ""
	}
	return r.vias.id(r.vias.intern(sentBy))
}

// millis converts a TTL to milliseconds, rounding a positive one up so that
// a sub-millisecond TTL is not zero.
func millis(d time.Duration) int64 {
	if d <= 0 {
		return d.Milliseconds()
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// RouteRedisClientLogs sends the lines go-redis logs itself (a failed dial,
// a sentinel switching masters) to log at debug level, instead of to
// standard error. go-redis has one logger per process, so this affects every
// client; call it once at start. The store reports the same conditions
// itself, sampled, at warn and info.
func RouteRedisClientLogs(log *zap.Logger) {
	redis.SetLogger(redisClientLog{log.Named("redis.client").Sugar()})
}

// redisClientLog adapts zap to go-redis's logger.
type redisClientLog struct{ s *zap.SugaredLogger }

func (l redisClientLog) Printf(_ context.Context, format string, v ...any) {
	l.s.Debugf(format, v...)
}

// Interface guards.
var _ Store = (*Redis)(nil)
