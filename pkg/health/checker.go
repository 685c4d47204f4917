package health

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
)

// NodeConfig is what the checker needs about a node beyond its dispatcher
// spec.
type NodeConfig struct {
	ID          string
	ESL         string // host:port, "" for none
	ESLPassword string
	Drain       bool
	// MediaTarget overrides MediaConfig.Target for this node ("": the
	// shared one).
	MediaTarget string
}

// MediaConfig configures the media probe (see pkg/config for meanings and
// defaults).
type MediaConfig struct {
	Enabled  bool
	Interval time.Duration
	// Target is the probe call's Request-URI; NodePlaceholder ({node}) is
	// replaced by the node's host:port.
	Target   string
	Duration time.Duration
	Timeout  time.Duration
	Codec    string
	// MaxLoss is a ratio (0.2 for 20 %).
	MaxLoss         float64
	Threshold, Rise int
}

// Config holds the health settings (see pkg/config for meanings and
// defaults).
type Config struct {
	Interval      time.Duration
	Timeout       time.Duration
	Fall, Rise    int
	AliveCodes    []string
	DownOnRefused bool

	PassiveFailures int
	Cooldown        time.Duration
	FullHold        time.Duration

	ESLPoll             time.Duration
	ESLReplyTimeout     time.Duration
	ESLMaxAge           time.Duration
	ESLDownOnDisconnect bool
	ProfileCheck        time.Duration

	CPUIdleMin float64
	CPUFor     time.Duration

	Source    netip.Addr
	UserAgent string

	Media MediaConfig
}

// Change is a node state transition.
type Change struct {
	Node     string
	From, To dispatcher.State
	Reason   string
	At       time.Time
}

// NodeStatus is what the checker knows about a node, for the admin API and
// metrics.
type NodeStatus struct {
	ID          string
	State       dispatcher.State
	Reason      string
	Since       time.Time
	ProbeClass  string
	ProbeStatus int
	ProbeRTT    time.Duration
	ProbeAt     time.Time
	ProbeError  string
	// ESL is nil for a node without an Event Socket.
	ESL *ESLStatus
	// LoadAge is the age of the load figures in use (-1: none).
	LoadAge time.Duration
	Version string
	Passive int64 // consecutive passive failures
	// Media is nil when the media probe is off or has not probed yet.
	Media *MediaStatus
}

// MediaStatus is what the media probe last found about a node.
type MediaStatus struct {
	// Down: the node is down for its media (threshold bad probes in a
	// row, not yet rise good ones).
	Down bool
	// Result, Status, Error and At are the last probe's: its class (ok,
	// loss, no_rtp or error), the final status of its INVITE, what went
	// wrong, and when it ended.
	Result string
	Status int
	Error  string
	At     time.Time
	// Measured: a probe has measured media; the figures below are from
	// the last one that did (a probe whose call was not answered measures
	// nothing).
	Measured               bool
	MeasuredAt             time.Time
	Sent, Received, Echoed int64
	Loss                   float64 // ratio
	Jitter, RTT            time.Duration
	// Probes counts probes by class (MediaClass.String()), since the
	// node's monitor started.
	Probes map[string]uint64
}

// Checker owns the health of every node: per node an OPTIONS prober, an
// Event Socket client when configured, passive failure counts from the
// proxy and the operator's wishes, merged by decide into the node's state
// in the dispatcher, which Pick reads at once.
type Checker struct {
	disp *dispatcher.Dispatcher
	cfg  Config
	set  settings
	log  *zap.Logger
	base *zap.Logger // unnamed, for the Event Socket clients (they name themselves)

	mu       sync.Mutex
	monitors map[string]*monitor
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	// hot is read on every call (passive observations) without the mutex.
	hot atomic.Pointer[map[string]*monitor]

	obsMu     sync.Mutex
	observers []func(Change)
	versions  map[string]string
	lastMix   string
}

// NewChecker returns a checker; Start begins monitoring.
func NewChecker(d *dispatcher.Dispatcher, cfg Config, log *zap.Logger) *Checker {
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.Rise < 1 {
		cfg.Rise = 1
	}
	if cfg.Fall < 1 {
		cfg.Fall = 1
	}
	if cfg.PassiveFailures < 1 {
		cfg.PassiveFailures = 1
	}
	cfg.Media.Threshold = max(cfg.Media.Threshold, 1)
	cfg.Media.Rise = max(cfg.Media.Rise, 1)
	c := &Checker{
		disp: d, cfg: cfg, log: log.Named("health"), base: log,
		monitors: map[string]*monitor{},
		versions: map[string]string{},
		set: settings{
			fall: cfg.Fall, rise: cfg.Rise, downOnRefused: cfg.DownOnRefused,
			cooldown: cfg.Cooldown, eslDownOnFail: cfg.ESLDownOnDisconnect,
			maxAge: cfg.ESLMaxAge, cpuIdleMin: cfg.CPUIdleMin, cpuFor: cfg.CPUFor,
			checkProfileStatus: cfg.ProfileCheck > 0,
			mediaMaxLoss:       cfg.Media.MaxLoss,
			mediaThreshold:     cfg.Media.Threshold,
			mediaRise:          cfg.Media.Rise,
		},
	}
	empty := map[string]*monitor{}
	c.hot.Store(&empty)
	return c
}

// OnChange registers f to be called after every state change.
func (c *Checker) OnChange(f func(Change)) {
	c.obsMu.Lock()
	c.observers = append(c.observers, f)
	c.obsMu.Unlock()
}

// Start begins monitoring nodes.
func (c *Checker) Start(ctx context.Context, nodes []NodeConfig) {
	c.mu.Lock()
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.mu.Unlock()
	c.SetNodes(nodes)
}

// SetNodes makes the monitored set equal nodes: new ones start, removed ones
// stop (their state is then the dispatcher's: a removed node drains), and
// changed Event Socket settings or media target restart a node's monitor.
func (c *Checker) SetNodes(nodes []NodeConfig) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil {
		return
	}
	want := map[string]NodeConfig{}
	for _, n := range nodes {
		want[n.ID] = n
	}
	// An operator's drain or disable outlives a restart of the node's
	// monitor: a reload that only changes its Event Socket or media
	// settings must not put a node under maintenance back into service.
	// The config's own drain flag wins only when the reload changes it.
	carried := map[string]Operator{}
	for id, m := range c.monitors {
		nc, ok := want[id]
		if !ok || nc.ESL != m.cfg.ESL || nc.ESLPassword != m.cfg.ESLPassword || nc.MediaTarget != m.cfg.MediaTarget {
			m.stop()
			if ok && nc.Drain == m.cfg.Drain {
				carried[id] = Operator(m.wish.Load())
			}
			delete(c.monitors, id)
			c.obsMu.Lock()
			delete(c.versions, id)
			c.obsMu.Unlock()
		}
	}
	for id, nc := range want {
		if m, ok := c.monitors[id]; ok {
			op := OperatorNone
			if nc.Drain {
				op = OperatorDrain
			}
			if m.cfg.Drain != nc.Drain {
				m.cfg.Drain = nc.Drain
				m.send(event{kind: evOperator, op: op})
			}
			continue
		}
		node := c.disp.Node(id)
		if node == nil {
			continue
		}
		m := c.newMonitor(nc, node)
		if op, ok := carried[id]; ok {
			m.startOp = op
		}
		c.monitors[id] = m
		c.wg.Add(1)
		go m.run()
	}
	hot := make(map[string]*monitor, len(c.monitors))
	for id, m := range c.monitors {
		hot[id] = m
	}
	c.hot.Store(&hot)
}

// Stop ends all monitoring and waits for it.
func (c *Checker) Stop() {
	c.mu.Lock()
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *Checker) monitorFor(id string) *monitor {
	return (*c.hot.Load())[id]
}

// InviteFailed counts a failure a node caused on a new call (the proxy's
// PassiveObserver). A 503 means full, not down.
func (c *Checker) InviteFailed(nodeID, reason string) {
	m := c.monitorFor(nodeID)
	if m == nil {
		return
	}
	if reason == "code_503" {
		m.trySend(event{kind: evInvite503})
		return
	}
	if m.consecutive.Add(1) >= int64(c.cfg.PassiveFailures) {
		m.trySend(event{kind: evPassiveDown, reason: reason})
	}
}

// InviteAnswered clears a node's passive failure count.
func (c *Checker) InviteAnswered(nodeID string) {
	if m := c.monitorFor(nodeID); m != nil && m.consecutive.Load() != 0 {
		m.consecutive.Store(0)
	}
}

// ErrUnknownNode is returned for an ID that is not monitored.
var ErrUnknownNode = errors.New("health: unknown node")

// SetOperator applies an operator's wish: drain, disable, or none (enable).
// It takes effect before SetOperator returns.
func (c *Checker) SetOperator(nodeID string, op Operator) error {
	m := c.monitorFor(nodeID)
	if m == nil {
		return fmt.Errorf("%w %q", ErrUnknownNode, nodeID)
	}
	done := make(chan struct{})
	if !m.send(event{kind: evOperator, op: op, done: done}) {
		return fmt.Errorf("health: node %q is being removed", nodeID)
	}
	select {
	case <-done:
	case <-m.ctx.Done():
	}
	return nil
}

// Status returns every monitored node's status, by ID.
func (c *Checker) Status() []NodeStatus {
	hot := *c.hot.Load()
	out := make([]NodeStatus, 0, len(hot))
	for _, m := range hot {
		if st := m.status.Load(); st != nil {
			s := *st
			s.Passive = m.consecutive.Load()
			out = append(out, s)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// NodeStatus returns one node's status.
func (c *Checker) NodeStatus(id string) (NodeStatus, bool) {
	m := c.monitorFor(id)
	if m == nil {
		return NodeStatus{}, false
	}
	st := m.status.Load()
	if st == nil {
		return NodeStatus{}, false
	}
	s := *st
	s.Passive = m.consecutive.Load()
	return s, true
}

func (c *Checker) notify(ch Change) {
	c.obsMu.Lock()
	obs := append([]func(Change){}, c.observers...)
	c.obsMu.Unlock()
	for _, f := range obs {
		f(ch)
	}
}

// noteVersion tracks FreeSWITCH versions across the pool and warns once per
// distinct mix: nodes of one pool must run the same version.
func (c *Checker) noteVersion(id, v string) {
	c.obsMu.Lock()
	defer c.obsMu.Unlock()
	if v == "" || c.versions[id] == v {
		return
	}
	c.versions[id] = v
	byVer := map[string][]string{}
	for n, ver := range c.versions {
		byVer[ver] = append(byVer[ver], n)
	}
	if len(byVer) < 2 {
		c.lastMix = ""
		return
	}
	parts := make([]string, 0, len(byVer))
	for ver, ns := range byVer {
		sort.Strings(ns)
		parts = append(parts, ver+": "+strings.Join(ns, ","))
	}
	sort.Strings(parts)
	mix := strings.Join(parts, "; ")
	if mix != c.lastMix {
		c.lastMix = mix
		c.log.Warn("FreeSWITCH versions differ across the pool; nodes should be identical", zap.String("versions", mix))
	}
}

// VersionMismatch returns a description of differing versions, or "".
func (c *Checker) VersionMismatch() string {
	c.obsMu.Lock()
	defer c.obsMu.Unlock()
	return c.lastMix
}

type eventKind uint8

const (
	evProbe eventKind = iota
	evESL
	evPassiveDown
	evInvite503
	evOperator
	evMedia
)

type event struct {
	kind   eventKind
	probe  ProbeResult
	esl    ESLStatus
	media  MediaResult
	op     Operator
	reason string
	done   chan struct{}
}

// monitor watches one node. Its run goroutine owns the nodeHealth: every
// input arrives as an event, so there is no lock around the decision.
type monitor struct {
	c      *Checker
	cfg    NodeConfig
	node   *dispatcher.Node
	ctx    context.Context
	cancel context.CancelFunc
	events chan event
	done   chan struct{}

	consecutive atomic.Int64
	status      atomic.Pointer[NodeStatus]
	lastMedia   string // last media failure logged (run goroutine only)

	// startOp is the operator's wish the monitor starts with: the config's
	// drain flag, or what the monitor it replaces had. wish is the one in
	// force, for that hand-over (written by run only).
	startOp Operator
	wish    atomic.Uint32
}

func (c *Checker) newMonitor(nc NodeConfig, node *dispatcher.Node) *monitor {
	ctx, cancel := context.WithCancel(c.ctx)
	m := &monitor{
		c: c, cfg: nc, node: node, ctx: ctx, cancel: cancel,
		events: make(chan event, 64),
		done:   make(chan struct{}),
	}
	if nc.Drain {
		m.startOp = OperatorDrain
	}
	return m
}

func (m *monitor) stop() {
	m.cancel()
	<-m.done
}

// send delivers an event unless the monitor is stopping.
func (m *monitor) send(ev event) bool {
	select {
	case m.events <- ev:
		return true
	case <-m.ctx.Done():
		return false
	}
}

// trySend never blocks (call path): a full queue drops the hint; the next
// failure sends it again.
func (m *monitor) trySend(ev event) {
	select {
	case m.events <- ev:
	default:
	}
}

func (m *monitor) run() {
	defer m.c.wg.Done()
	defer close(m.done)
	defer func() {
		if r := recover(); r != nil {
			m.c.log.Error("panic in node monitor", zap.String("node", m.cfg.ID), zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
		}
	}()
	c := m.c
	h := &nodeHealth{esl: m.cfg.ESL != "", operator: m.startOp}
	m.wish.Store(uint32(h.operator))
	log := c.log.With(zap.String("node", m.cfg.ID))
	state := m.node.State()
	if state == dispatcher.StateDraining && h.operator == OperatorNone {
		// A node the dispatcher retired and revived starts fresh.
		state = dispatcher.StateUp
	}
	reason := ReasonNone
	since := time.Now()

	var bg sync.WaitGroup
	defer bg.Wait()
	bg.Add(1)
	go func() {
		defer bg.Done()
		m.probeLoop()
	}()
	if c.cfg.Media.Enabled {
		bg.Add(1)
		go func() {
			defer bg.Done()
			m.mediaLoop()
		}()
	}
	if h.esl {
		cl := NewESLClient(ESLConfig{
			NodeID:            m.cfg.ID,
			Addr:              m.cfg.ESL,
			Password:          m.cfg.ESLPassword,
			PollInterval:      c.cfg.ESLPoll,
			ReplyTimeout:      c.cfg.ESLReplyTimeout,
			ProfileCheckEvery: c.cfg.ProfileCheck,
			SourceAddr:        sourceString(c.cfg.Source),
			// A node that comes back is reconnected within a second, so
			// that it takes calls again as soon as its probes pass.
			BackoffMin: 100 * time.Millisecond,
			BackoffMax: time.Second,
		}, c.base, func(st ESLStatus) { m.send(event{kind: evESL, esl: st}) })
		bg.Add(1)
		go func() {
			defer bg.Done()
			cl.Run(m.ctx)
		}()
	}

	apply := func(now time.Time) {
		next, why := decide(h, &c.set, now)
		if next != state {
			old := m.node.SetState(next)
			if old != state && old != next {
				// Someone outside health moved it (a reload retiring it):
				// theirs wins for this round.
				log.Debug("node state changed outside health", zap.Stringer("state", old))
			}
			lvl := log.Info
			if next == dispatcher.StateDown {
				lvl = log.Warn
			}
			lvl("node state changed", zap.Stringer("from", state), zap.Stringer("to", next), zap.String("reason", why))
			ch := Change{Node: m.cfg.ID, From: state, To: next, Reason: why, At: now}
			state, since = next, now
			c.notify(ch)
		}
		reason = why
		m.publish(h, state, reason, since, now)
	}
	// The node's configured state first: drained nodes never take a call.
	apply(time.Now())

	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case ev := <-m.events:
			now := time.Now()
			switch ev.kind {
			case evProbe:
				h.observeProbe(ev.probe, &c.set)
			case evESL:
				h.observeESL(ev.esl, &c.set, now)
				if ev.esl.Connected && !ev.esl.Load.At.IsZero() {
					l := ev.esl.Load
					m.node.SetLoad(&l)
				} else if !ev.esl.Connected {
					m.node.SetLoad(nil)
				}
				if ev.esl.Version != "" {
					c.noteVersion(m.cfg.ID, ev.esl.Version)
				}
			case evPassiveDown:
				if h.passiveDownAt.IsZero() {
					h.passiveDownAt = now
					h.passivePasses = 0
					h.passiveProbeDown = h.probe.down
					log.Warn("passive failures", zap.String("reason", ev.reason), zap.Int64("consecutive", m.consecutive.Load()))
				}
				m.consecutive.Store(0)
			case evInvite503:
				h.fullUntil = now.Add(c.cfg.FullHold)
			case evOperator:
				h.operator = ev.op
				m.wish.Store(uint32(ev.op))
			case evMedia:
				h.media.add(ev.media, &c.set)
				m.logMedia(log, &h.media)
			}
			apply(now)
			if ev.done != nil {
				close(ev.done)
			}
		case now := <-tick.C:
			// Time-driven conditions: load figures going stale, the
			// 503 hold ending, CPU saturation lasting.
			if l := m.node.Load(); l != nil && now.Sub(l.At) > c.cfg.ESLMaxAge {
				m.node.SetLoad(nil)
			}
			apply(now)
		}
	}
}

// probeLoop probes every interval; one probe in flight at a time.
func (m *monitor) probeLoop() {
	c := m.c
	p := &Prober{
		NodeID:    m.cfg.ID,
		Target:    m.node.Spec.Addr,
		Transport: m.node.Spec.Transport,
		Source:    c.cfg.Source,
		Timeout:   c.cfg.Timeout,
		Alive:     AliveCodes(c.cfg.AliveCodes),
		UserAgent: c.cfg.UserAgent,
	}
	for {
		start := time.Now()
		r := p.Probe(m.ctx)
		if m.ctx.Err() != nil {
			return
		}
		if !m.send(event{kind: evProbe, probe: r}) {
			return
		}
		wait := c.cfg.Interval - time.Since(start)
		if wait < 0 {
			wait = 0
		}
		t := time.NewTimer(wait)
		select {
		case <-m.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

func (m *monitor) publish(h *nodeHealth, state dispatcher.State, reason string, since, now time.Time) {
	st := &NodeStatus{
		ID: m.cfg.ID, State: state, Reason: reason, Since: since,
		ProbeStatus: h.probe.lastStatus, ProbeRTT: h.probe.lastRTT, ProbeAt: h.probe.lastAt,
		ProbeError: h.probe.lastErr,
		LoadAge:    -1,
	}
	if h.probe.probed {
		switch {
		case h.probe.busy:
			st.ProbeClass = ProbeFull.String()
		case h.probe.fails > 0:
			st.ProbeClass = ProbeDead.String()
		default:
			st.ProbeClass = ProbeAlive.String()
		}
	}
	if h.esl {
		e := h.eslStatus
		st.ESL = &e
		st.Version = e.Version
	}
	if l := m.node.Load(); l != nil {
		st.LoadAge = now.Sub(l.At)
	}
	if mt := &h.media; mt.probed {
		r, mr := mt.last, mt.measured
		ms := &MediaStatus{
			Down: mt.down, Result: mt.lastClass.String(), Status: r.Status, At: r.At,
			Probes: make(map[string]uint64, len(MediaClasses)),
		}
		if r.Err != nil {
			ms.Error = r.Err.Error()
		}
		if mt.hasMeasured {
			ms.Measured, ms.MeasuredAt = true, mr.At
			ms.Sent, ms.Received, ms.Echoed = mr.Sent, mr.Received, mr.Echoed
			ms.Loss, ms.Jitter, ms.RTT = mr.Loss, mr.Jitter, mr.RTT
		}
		for _, c := range MediaClasses {
			ms.Probes[c.String()] = mt.counts[c]
		}
		st.Media = ms
	}
	m.status.Store(st)
}

// mediaLoop places a media probe call every interval; one in flight at a
// time, the first at once.
func (m *monitor) mediaLoop() {
	c := m.c
	mc := c.cfg.Media
	spec := m.node.Spec
	p := &MediaProber{
		NodeID:    m.cfg.ID,
		Target:    spec.Addr,
		Transport: spec.Transport,
		URI:       mediaURI(mc.Target, m.cfg.MediaTarget, spec.Host, spec.Addr.Port()),
		Source:    c.cfg.Source,
		Codec:     mc.Codec,
		Duration:  mc.Duration,
		Timeout:   mc.Timeout,
		Logger:    c.log,
	}
	defer p.Close()
	for {
		start := time.Now()
		r := p.Probe(m.ctx)
		if m.ctx.Err() != nil {
			return
		}
		if !m.send(event{kind: evMedia, media: r}) {
			return
		}
		t := time.NewTimer(max(mc.Interval-time.Since(start), 0))
		select {
		case <-m.ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// logMedia logs a media probe that failed, once per change of what went
// wrong: a bad probe at info (warn when it takes the node down, logged by
// apply), a probe that could not be placed at warn.
func (m *monitor) logMedia(log *zap.Logger, mt *mediaTrack) {
	r := mt.last
	what := mt.lastClass.String()
	if r.Err != nil {
		what += ": " + r.Err.Error()
	}
	if mt.lastClass == MediaOK {
		m.lastMedia = ""
		return
	}
	if what == m.lastMedia {
		return
	}
	m.lastMedia = what
	fields := []zap.Field{zap.String("result", mt.lastClass.String()), zap.Int("status", r.Status),
		zap.Int64("sent", r.Sent), zap.Int64("received", r.Received), zap.Float64("loss", r.Loss)}
	if r.Err != nil {
		fields = append(fields, zap.Error(r.Err))
		log.Warn("media probe could not measure the node's media", fields...)
		return
	}
	log.Info("media probe failed", fields...)
}

func sourceString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
