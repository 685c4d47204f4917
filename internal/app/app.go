// Package app wires sipbalancer's packages together from a configuration:
// the dispatcher with the configured nodes, the affinity store, health
// tracking and the SIP proxy. cmd/sipbalancer runs it under signals; the
// end-to-end tests run the very same wiring in-process.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sipbalancer/sipbalancer/pkg/config"
	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/guard"
	"github.com/sipbalancer/sipbalancer/pkg/health"
	"github.com/sipbalancer/sipbalancer/pkg/metrics"
	"github.com/sipbalancer/sipbalancer/pkg/session"
	sipproxy "github.com/sipbalancer/sipbalancer/pkg/sip"
)

// App is a running balancer.
type App struct {
	cfg     *config.Config
	log     *zap.Logger
	disp    *dispatcher.Dispatcher
	store   session.Store
	memory  *session.Memory
	redis   *session.Redis
	checker *health.Checker
	proxy   *sipproxy.Proxy
	stop    context.CancelFunc
	reg     *prometheus.Registry
	rec     *metrics.Recorder
	guard   *guard.Guard

	// reloadMu serializes Reload (SIGHUP and the admin API may race) and
	// guards cfg's reloadable keys.
	reloadMu sync.Mutex
	// level, when set, lets Reload apply log.level at once.
	level *zap.AtomicLevel
}

// New builds the balancer from a validated configuration. Nothing listens
// until Start.
func New(cfg *config.Config, log *zap.Logger) (*App, error) {
	if log == nil {
		log = zap.NewNop()
	}
	a := &App{cfg: cfg, log: log}

	specs, err := NodeSpecs(cfg.Nodes)
	if err != nil {
		return nil, err
	}
	policy, err := dispatcher.NewPolicy(cfg.Dispatcher.Policy)
	if err != nil {
		return nil, fmt.Errorf("dispatcher.policy: %w", err)
	}
	a.disp, err = dispatcher.New(policy, specs)
	if err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}

	// The store's confirmed bindings are the truth about this instance's
	// active calls: they expire, so the counts heal themselves.
	onActive := func(nodeID string, delta int) {
		if n := a.disp.Node(nodeID); n != nil {
			n.AddActive(int64(delta))
		}
	}
	switch cfg.Session.Store {
	case "", "memory":
		a.memory = session.NewMemory(session.MemoryOptions{MaxDialogs: cfg.Session.MaxDialogs, OnActive: onActive})
		a.store = a.memory
	case "redis":
		r := cfg.Session.Redis
		session.RouteRedisClientLogs(log)
		a.redis, err = session.NewRedis(session.RedisOptions{
			Mode:             r.Mode,
			Addrs:            r.Addrs,
			MasterName:       r.MasterName,
			Username:         r.Username,
			Password:         r.Password,
			SentinelPassword: r.SentinelPassword,
			DB:               r.DB,
			TLS:              r.TLS,
			KeyPrefix:        r.KeyPrefix,
			DialTimeout:      r.DialTimeout,
			ReadTimeout:      r.ReadTimeout,
			WriteTimeout:     r.WriteTimeout,
			PoolSize:         r.PoolSize,
			QueueSize:        r.QueueSize,
			LookupTimeout:    r.LookupTimeout,
			OnActive:         onActive,
			Logger:           log,
		})
		if err != nil {
			return nil, fmt.Errorf("session.redis: %w", err)
		}
		a.store = a.redis
	default:
		return nil, fmt.Errorf("session.store: unknown store %q", cfg.Session.Store)
	}

	secret := []byte(cfg.Session.TokenSecret)
	if len(secret) == 0 {
		secret = session.RandomSecret()
		log.Warn("session.token_secret is empty: using a random secret; instances will not share calls " +
			"(set SIPBALANCER_SESSION_TOKEN_SECRET on every instance)")
	}
	signer, err := session.NewSigner(secret)
	if err != nil {
		return nil, err
	}

	a.checker, err = newChecker(cfg, a.disp, log)
	if err != nil {
		return nil, err
	}
	a.reg = a.newRegistry()
	a.checker.OnChange(a.recordStateChange)
	a.guard, err = a.newGuard(cfg, specs)
	if err != nil {
		return nil, err
	}
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}

	listen, err := cfg.Listeners()
	if err != nil {
		return nil, err
	}
	pl := make([]sipproxy.Listen, 0, len(listen))
	for _, l := range listen {
		pl = append(pl, sipproxy.Listen{Network: l.Network, Addr: l.Addr})
	}
	tlsConf, err := loadTLS(cfg, log)
	if err != nil {
		return nil, err
	}
	hashHeader := ""
	if h, ok := cutPrefixFold(cfg.Dispatcher.HashKey, "header:"); ok {
		hashHeader = h
	}
	a.proxy, err = sipproxy.New(sipproxy.Config{
		Listen:          pl,
		Advertise:       cfg.SIP.Advertise,
		TLS:             tlsConf,
		UserAgent:       cfg.SIP.UserAgent,
		InviteTimeout:   cfg.Failover.InviteTimeout,
		RingTimeout:     cfg.Failover.RingTimeout,
		MaxAttempts:     cfg.Failover.MaxAttempts,
		FailoverCodes:   cfg.Failover.Codes,
		RetryAfter:      cfg.RetryAfterSeconds(),
		EarlyTTL:        cfg.Session.EarlyTTL,
		DialogTTL:       cfg.Session.DialogTTL,
		ReleaseLinger:   cfg.Session.ReleaseLinger,
		HashHeader:      hashHeader,
		Rehome:          cfg.Session.Rehome,
		HideTopology:    cfg.Security.HideTopology,
		OverloadLatency: cfg.Limits.OverloadLatency,
	}, sipproxy.Deps{
		Dispatcher: a.disp,
		Store:      a.store,
		Signer:     signer,
		Secret:     secret,
		Passive:    a.checker,
		Logger:     log,
		Metrics:    a.rec,
		Guard:      a.guard,
	})
	if err != nil {
		return nil, err
	}
	return a, nil
}

// Start binds the SIP listeners, starts serving and starts watching the
// nodes' health.
func (a *App) Start() error {
	if err := a.proxy.Start(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.stop = cancel
	a.checker.OnChange(func(ch health.Change) {
		if ch.To == dispatcher.StateDown {
			a.proxy.NodeDown(ch.Node)
		}
	})
	a.checker.Start(ctx, nodeConfigs(a.cfg.Nodes))
	if a.redis != nil {
		go a.watchRedis(ctx)
	}
	a.log.Info("sipbalancer started",
		zap.Strings("listeners", a.proxy.Listeners()),
		zap.Int("nodes", len(a.disp.Snapshot().Nodes())),
		zap.String("policy", a.disp.Policy().String()))
	return nil
}

// Proxy returns the SIP proxy (tests read its bound addresses).
func (a *App) Proxy() *sipproxy.Proxy { return a.proxy }

// Checker returns the health checker (drain, status).
func (a *App) Checker() *health.Checker { return a.checker }

// Dispatcher returns the node set.
func (a *App) Dispatcher() *dispatcher.Dispatcher { return a.disp }

// Listeners lists the bound SIP listeners as scheme://addr.
func (a *App) Listeners() []string { return a.proxy.Listeners() }

// Draining reports whether the instance drains (SIGTERM): new calls are
// refused while established calls go on.
func (a *App) Draining() bool { return a.proxy.Draining() }

// Redis returns the Redis store, or nil with the memory store.
func (a *App) Redis() *session.Redis { return a.redis }

// watchRedis logs the affinity store's degradation and recovery once each:
// while Redis is unreachable new calls go on (writes queue) and in-dialog
// requests route by their Record-Route token.
func (a *App) watchRedis(ctx context.Context) {
	healthy := true
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		h := a.redis.Healthy()
		if h == healthy {
			continue
		}
		healthy = h
		st := a.redis.Stats()
		if !h {
			a.log.Warn("affinity store degraded: Redis unreachable or its queue filling; calls go on, in-dialog requests route by token",
				zap.String("error", st.LastError), zap.Int("queue", st.QueueDepth), zap.Int("backlog", st.Backlog))
		} else {
			a.log.Info("affinity store healthy again", zap.Int("backlog", st.Backlog))
		}
	}
}

// Store returns the affinity store.
func (a *App) Store() session.Store { return a.store }

// ActiveCalls is the number of confirmed calls across nodes.
func (a *App) ActiveCalls() int64 {
	var total int64
	for _, n := range a.disp.Snapshot().Nodes() {
		total += n.Active()
	}
	return total
}

// Shutdown drains: new INVITEs get 503 at once, while transactions in
// flight finish and established calls' requests keep being routed, until
// both are done or ctx ends. Then everything stops.
func (a *App) Shutdown(ctx context.Context) error {
	a.proxy.Drain()
	a.log.Info("draining: new calls are refused",
		zap.Int64("in_flight", a.proxy.InFlight()), zap.Int64("active_calls", a.ActiveCalls()))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	drained := false
	for !drained {
		if a.proxy.InFlight() == 0 && a.ActiveCalls() == 0 {
			drained = true
			break
		}
		select {
		case <-ctx.Done():
			a.log.Warn("drain deadline reached",
				zap.Int64("in_flight", a.proxy.InFlight()), zap.Int64("active_calls", a.ActiveCalls()))
			drained = true
		case <-tick.C:
		}
	}
	return a.Close()
}

// Close stops everything at once.
func (a *App) Close() error {
	var errs []error
	if a.proxy != nil {
		errs = append(errs, a.proxy.Close())
	}
	if a.checker != nil {
		a.checker.Stop()
	}
	if a.stop != nil {
		a.stop()
	}
	if a.store != nil {
		errs = append(errs, a.store.Close())
	}
	return errors.Join(errs...)
}

// UseLogLevel hands the App the logger's runtime level, so that Reload
// applies a changed log.level at once instead of reporting it as needing a
// restart.
func (a *App) UseLogLevel(l zap.AtomicLevel) { a.level = &l }

// liveKeys are the configuration keys Reload applies without a restart.
var liveKeys = []string{"nodes", "dispatcher.policy", "log.level", "trunks", "limits.overload_latency"}

// Reload applies what can change without a restart — the node set, its
// weights, caps, addresses and drain flags, the policy, the trunks,
// limits.overload_latency and log.level (with UseLogLevel) — from a new validated configuration. It returns the keys it
// applied and the keys that changed but need a restart (sip.listen,
// admin.listen, ...), each named as in the YAML file. On error nothing
// changed: the running configuration stays in force. Calls are never
// dropped: a removed node drains.
func (a *App) Reload(cfg *config.Config) (applied, needRestart []string, err error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	// Everything that can fail is done before anything changes.
	specs, err := NodeSpecs(cfg.Nodes)
	if err != nil {
		return nil, nil, err
	}
	var policy dispatcher.Policy
	if cfg.Dispatcher.Policy != a.cfg.Dispatcher.Policy {
		if policy, err = dispatcher.NewPolicy(cfg.Dispatcher.Policy); err != nil {
			return nil, nil, fmt.Errorf("dispatcher.policy: %w", err)
		}
	}
	var level zapcore.Level
	setLevel := a.level != nil && cfg.Log.Level != a.cfg.Log.Level
	if setLevel {
		if err := level.UnmarshalText([]byte(cfg.Log.Level)); err != nil {
			return nil, nil, fmt.Errorf("log.level: %w", err)
		}
	}
	trunks, err := guardTrunks(cfg)
	if err != nil {
		return nil, nil, err
	}
	changed := ChangedKeys(a.cfg, cfg)

	added, removed, err := a.disp.Update(specs)
	if err != nil {
		return nil, nil, fmt.Errorf("nodes: %w", err)
	}
	if policy != nil {
		a.disp.SetPolicy(policy)
	}
	for _, id := range added {
		a.log.Info("node added", zap.String("node", id))
	}
	for _, id := range removed {
		a.log.Info("node removed: draining its calls", zap.String("node", id))
	}
	a.checker.SetNodes(nodeConfigs(cfg.Nodes))
	// Trunks are live too; node addresses stay admitted as the set changes.
	if err := a.guard.SetTrunks(trunks, nodeIPs(specs)); err != nil {
		a.log.Error("trunks not applied", zap.Error(err))
	}
	a.cfg.Trunks = cfg.Trunks
	a.proxy.SetOverloadLatency(cfg.Limits.OverloadLatency)
	a.cfg.Limits.OverloadLatency = cfg.Limits.OverloadLatency
	if setLevel {
		a.level.SetLevel(level)
	}
	a.cfg.Nodes = cfg.Nodes
	a.cfg.Dispatcher.Policy = cfg.Dispatcher.Policy
	if setLevel {
		a.cfg.Log.Level = cfg.Log.Level
	}

	applied, needRestart = []string{}, []string{}
	for _, k := range changed {
		switch {
		case k == "log.level" && !setLevel:
			needRestart = append(needRestart, k)
		case slices.Contains(liveKeys, k) || k == "trunks" || strings.HasPrefix(k, "trunks["):
			applied = append(applied, k)
		default:
			needRestart = append(needRestart, k)
		}
	}
	return applied, needRestart, nil
}

// ChangedKeys lists the keys whose values differ between old and cur, named
// as in the YAML file (sip.listen, health.options.interval); the node list
// is the one key "nodes". It names keys only, never values, so its output
// may be logged even when a secret changed.
func ChangedKeys(old, cur *config.Config) []string {
	var keys []string
	var walk func(prefix string, a, b reflect.Value)
	walk = func(prefix string, a, b reflect.Value) {
		t := a.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			key := name
			if prefix != "" {
				key = prefix + "." + name
			}
			if f.Type.Kind() == reflect.Struct {
				walk(key, a.Field(i), b.Field(i))
				continue
			}
			if !reflect.DeepEqual(a.Field(i).Interface(), b.Field(i).Interface()) {
				keys = append(keys, key)
			}
		}
	}
	walk("", reflect.ValueOf(*old), reflect.ValueOf(*cur))
	return keys
}

// NodeSpecs turns configured nodes into dispatcher specs, resolving host
// names once (never on the call path).
func NodeSpecs(nodes []config.Node) ([]dispatcher.Spec, error) {
	specs := make([]dispatcher.Spec, 0, len(nodes))
	for i, n := range nodes {
		na, err := config.ParseNodeSIP(n.SIP)
		if err != nil {
			return nil, fmt.Errorf("nodes[%d].sip: %w", i, err)
		}
		ip, err := resolve(na.Host)
		if err != nil {
			return nil, fmt.Errorf("nodes[%d].sip: %w", i, err)
		}
		specs = append(specs, dispatcher.Spec{
			ID:        n.ID,
			Host:      na.Host,
			Addr:      netip.AddrPortFrom(ip, uint16(na.Port)),
			Transport: na.Transport,
			Weight:    n.Weight,
			MaxCalls:  n.MaxCalls,
			Priority:  n.Priority,
		})
	}
	return specs, nil
}

func resolve(host string) (netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap(), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("cannot resolve %q: %v", host, err)
	}
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			return ip.Unmap(), nil
		}
	}
	return ips[0], nil
}

func nodeConfigs(nodes []config.Node) []health.NodeConfig {
	out := make([]health.NodeConfig, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, health.NodeConfig{ID: n.ID, ESL: n.ESL, ESLPassword: n.ESLPassword, Drain: n.Drain, MediaTarget: n.MediaTarget})
	}
	return out
}

func newChecker(cfg *config.Config, d *dispatcher.Dispatcher, log *zap.Logger) (*health.Checker, error) {
	h := cfg.Health
	var src netip.Addr
	if h.SourceAddr != "" {
		var err error
		if src, err = netip.ParseAddr(h.SourceAddr); err != nil {
			return nil, fmt.Errorf("health.source_addr: %w", err)
		}
	}
	return health.NewChecker(d, health.Config{
		Interval:            h.Options.Interval,
		Timeout:             h.Options.Timeout,
		Fall:                h.Options.Fall,
		Rise:                h.Options.Rise,
		AliveCodes:          h.Options.AliveCodes,
		DownOnRefused:       h.Options.DownOnRefused,
		PassiveFailures:     h.Passive.Failures,
		Cooldown:            h.Passive.Cooldown,
		FullHold:            h.Passive.FullHold,
		ESLPoll:             h.ESL.PollInterval,
		ESLReplyTimeout:     h.ESL.ReplyTimeout,
		ESLMaxAge:           h.ESL.MaxAge,
		ESLDownOnDisconnect: h.ESL.DownOnDisconnect,
		ProfileCheck:        h.ESL.ProfileCheck,
		CPUIdleMin:          h.CPU.IdleMin,
		CPUFor:              h.CPU.For,
		Source:              src,
		UserAgent:           cfg.SIP.UserAgent,
		Media: health.MediaConfig{
			Enabled:   h.Media.Enabled,
			Interval:  h.Media.Interval,
			Target:    h.Media.Target,
			Duration:  h.Media.Duration,
			Timeout:   h.Media.Timeout,
			Codec:     h.Media.Codec,
			MaxLoss:   h.Media.MaxLoss / 100,
			Threshold: h.Media.Threshold,
			Rise:      h.Media.Rise,
		},
	}, log), nil
}
