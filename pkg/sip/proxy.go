package sip

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/guard"
	"github.com/sipbalancer/sipbalancer/pkg/metrics"
	"github.com/sipbalancer/sipbalancer/pkg/session"
)

// Config is what the proxy takes from the configuration file.
type Config struct {
	Listen    []Listen
	Advertise string
	TLS       *tls.Config
	// UserAgent goes into the Server header of responses we generate.
	UserAgent string

	InviteTimeout time.Duration
	RingTimeout   time.Duration
	MaxAttempts   int
	FailoverCodes []int
	// RetryAfter is the Retry-After value, in seconds, of our 503s.
	RetryAfter int

	EarlyTTL      time.Duration
	DialogTTL     time.Duration
	ReleaseLinger time.Duration

	// HashHeader names the header whose value keys the hash policy; empty
	// means the Call-ID.
	HashHeader string

	// UDPSockets is how many UDP sockets each udp:// listener binds
	// (SO_REUSEPORT, Linux); 0 means one per CPU, at most 8.
	UDPSockets int
	// UDPReadBuffer is the receive buffer asked for each UDP socket
	// (0: 4 MiB).
	UDPReadBuffer int

	// HideTopology keeps nodes' addresses from carriers (topology.go).
	HideTopology bool

	// OverloadLatency sheds new calls with 503 while the Go scheduler's
	// 99th-percentile latency exceeds it (overload.go); 0 turns shedding
	// off.
	OverloadLatency time.Duration

	// Rehome gives the calls of a node that is down to another node (pools
	// whose nodes share a database and recover each other's calls). Needs
	// a store that implements session.Rehomer.
	Rehome bool
}

// PassiveObserver learns what nodes did with live traffic. Only what the
// node caused is reported: our own shedding never counts against a node.
type PassiveObserver interface {
	// InviteFailed: the node did not answer in time, or answered a
	// failover code before any 18x.
	InviteFailed(nodeID, reason string)
	// InviteAnswered: the node sent an 18x or a final response.
	InviteAnswered(nodeID string)
}

// Deps are the proxy's collaborators.
type Deps struct {
	Dispatcher *dispatcher.Dispatcher
	Store      session.Store
	Signer     *session.Signer
	// Secret keys the deterministic Via branches; it must be the same on
	// every instance (the token secret).
	Secret  []byte
	Passive PassiveObserver   // optional
	Logger  *zap.Logger       // optional
	Metrics *metrics.Recorder // optional
	// Guard is admission control (trunk ACL, rate and message limits);
	// nil admits everything.
	Guard *guard.Guard
}

// Proxy is the SIP side of sipbalancer.
type Proxy struct {
	cfg     Config
	disp    *dispatcher.Dispatcher
	store   session.Store
	signer  *session.Signer
	br      *brancher
	rehome  session.Rehomer // nil unless re-homing is on
	passv   PassiveObserver
	metrics *metrics.Recorder
	guard   *guard.Guard
	log     *zap.Logger

	ua  *sipgo.UserAgent
	srv *sipgo.Server
	cl  *sipgo.Client

	listeners []*listener
	byNetwork map[string]*listener // first listener per network
	self      selfSet

	failoverCodes [700]bool
	retryAfter    sip.Header
	serverHdr     sip.Header

	// liveInvites holds our INVITE client branches (by the branch of our
	// Via) until their final response: onWire gives them their 18x in
	// socket order (branch.recoverRinging).
	liveInvites sync.Map
	// inviteBranches holds the top-Via branches of INVITE server
	// transactions that may still see an ACK for a non-2xx final.
	inviteBranches sync.Map
	// downSignals holds, per node ID, a channel closed the next time the
	// node is declared down (NodeDown).
	downSignals sync.Map

	overload *overload
	stopBg   context.CancelFunc

	draining atomic.Bool
	inflight atomic.Int64 // requests being handled
	wg       sync.WaitGroup
	closed   atomic.Bool
}

// sipgo refuses UDP messages above UDPMTUSize-200 (1300 bytes by default);
// calls with a large SDP or many Record-Routes must not fail for that. It is
// a process-wide variable of sipgo's, read by every transport goroutine, so
// it is set once, at program start, before any of them runs.
func init() {
	if sip.UDPMTUSize < 65000 {
		sip.UDPMTUSize = 65000
	}
	// sipgo keeps a finished transaction, with every message it holds, for
	// 64*T1 (32 s) in three cases: an INVITE answered 2xx (Timer L on the
	// server side, M on the client side), and a non-INVITE answered over
	// UDP (Timer J). At 200 calls/s that is some 40,000 transactions and
	// 150 MB live. A proxy does not need them that long: 2xx
	// retransmissions after the client transaction ended are relayed
	// statelessly (onStrayResponse), ACKs are forwarded statelessly, and a
	// caller stops retransmitting an INVITE at our immediate 100 Trying and
	// a BYE at its final answer. 5 s (T4) still covers retransmissions on
	// a lossy link by a wide margin.
	sip.Timer_L = 5 * time.Second
	sip.Timer_M = 5 * time.Second
	sip.Timer_J = 5 * time.Second
}

// noBuild stops sipgo's Client from "completing" our requests: with no
// option it would add missing headers and reallocate the header list. Our
// outbound copies are complete.
func noBuild(*sipgo.Client, *sip.Request) error { return nil }

// New builds a proxy. Listeners are bound by Start.
func New(cfg Config, deps Deps) (*Proxy, error) {
	if deps.Dispatcher == nil || deps.Store == nil || deps.Signer == nil {
		return nil, errors.New("sip: dispatcher, store and signer are required")
	}
	if len(cfg.Listen) == 0 {
		return nil, errors.New("sip: no listen address")
	}
	if cfg.InviteTimeout <= 0 || cfg.MaxAttempts <= 0 {
		return nil, errors.New("sip: invite timeout and max attempts must be positive")
	}
	if cfg.UserAgent == "" {
		cfg.UserAgent = "sipbalancer"
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 1
	}
	if cfg.RingTimeout <= 0 {
		cfg.RingTimeout = 3 * time.Minute
	}
	log := deps.Logger
	if log == nil {
		log = zap.NewNop()
	}
	p := &Proxy{
		cfg:        cfg,
		disp:       deps.Dispatcher,
		store:      deps.Store,
		signer:     deps.Signer,
		br:         newBrancher(deps.Secret),
		passv:      deps.Passive,
		metrics:    deps.Metrics,
		guard:      deps.Guard,
		log:        log.Named("sip"),
		byNetwork:  make(map[string]*listener),
		retryAfter: sip.NewHeader("Retry-After", strconv.Itoa(cfg.RetryAfter)),
		serverHdr:  sip.NewHeader("Server", cfg.UserAgent),
		overload:   &overload{log: log.Named("sip")},
	}
	p.overload.threshold.Store(int64(cfg.OverloadLatency))
	if cfg.Rehome {
		r, ok := deps.Store.(session.Rehomer)
		if !ok {
			return nil, errors.New("sip: re-homing needs a store that can re-home calls")
		}
		p.rehome = r
	}
	for _, c := range cfg.FailoverCodes {
		if c >= 300 && c < 700 {
			p.failoverCodes[c] = true
		}
	}
	return p, nil
}

// Start binds every listener (an error if any fails) and serves them until
// Close. Binding happens before Start returns, so the addresses are known.
func (p *Proxy) Start() error {
	fallback := ""
	udpSockets := p.cfg.UDPSockets
	if udpSockets <= 0 {
		udpSockets = min(runtime.NumCPU(), 8)
	}
	udpBuffer := p.cfg.UDPReadBuffer
	if udpBuffer <= 0 {
		udpBuffer = 4 << 20
	}
	for _, l := range p.cfg.Listen {
		bl, err := bind(l, p.cfg.TLS, udpSockets, udpBuffer, p.guard)
		if err != nil {
			p.closeListeners()
			return err
		}
		if bl.bound.Addr().IsUnspecified() && fallback == "" {
			fallback = firstHostIPv4()
		}
		if err := bl.advertiseFor(p.cfg.Advertise, fallback); err != nil {
			bl.close()
			p.closeListeners()
			return err
		}
		p.listeners = append(p.listeners, bl)
		if _, ok := p.byNetwork[bl.network]; !ok {
			p.byNetwork[bl.network] = bl
		}
	}
	p.self = newSelfSet(p.listeners)
	bgCtx, stopBg := context.WithCancel(context.Background())
	p.stopBg = stopBg
	go p.overload.run(bgCtx)

	uaOpts := []sipgo.UserAgentOption{
		sipgo.WithUserAgent(p.cfg.UserAgent),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerUnhandledResponseHandler(p.onStrayResponse),
			sip.WithTransactionLayerTerminateOnConnClose(),
		),
	}
	if p.guard != nil {
		// Before sipgo parses a datagram: message limits, the source ACL,
		// and rate limits in drop mode. Never return an error: sipgo stops
		// a UDP listener whose filter fails.
		filter := p.guard.ReadFilter()
		uaOpts = append(uaOpts, sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerReadFilter(func(pr sip.TransportReadProps, b []byte) ([]byte, error) {
				return filter(pr.Transport, pr.RemoteAddr, b), nil
			})))
	}
	ua, err := sipgo.NewUA(uaOpts...)
	if err != nil {
		p.closeListeners()
		return fmt.Errorf("sip: user agent: %w", err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		p.closeListeners()
		return fmt.Errorf("sip: server: %w", err)
	}
	cl, err := sipgo.NewClient(ua)
	if err != nil {
		p.closeListeners()
		return fmt.Errorf("sip: client: %w", err)
	}
	p.ua, p.srv, p.cl = ua, srv, cl
	for _, m := range []sip.RequestMethod{
		sip.INVITE, sip.ACK, sip.CANCEL, sip.BYE, sip.OPTIONS, sip.UPDATE, sip.INFO,
		sip.REFER, sip.NOTIFY, sip.PRACK, sip.MESSAGE, sip.SUBSCRIBE, sip.PUBLISH, sip.REGISTER,
	} {
		srv.OnRequest(m, p.handle)
	}
	srv.OnNoRoute(p.handle)
	ua.TransportLayer().OnMessage(p.onWire)

	for _, l := range p.listeners {
		l := l
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			var err error
			switch l.network {
			case "udp":
				for _, c := range l.more {
					c := c
					p.wg.Add(1)
					go func() {
						defer p.wg.Done()
						if err := srv.ServeUDP(c); err != nil && !p.closed.Load() {
							p.log.Error("listener stopped", zap.String("listener", l.String()), zap.Error(err))
						}
					}()
				}
				err = srv.ServeUDP(l.udp)
			case "tcp":
				err = srv.ServeTCP(l.ln)
			case "tls":
				err = srv.ServeTLS(l.ln)
			}
			if err != nil && !p.closed.Load() {
				p.log.Error("listener stopped", zap.String("listener", l.String()), zap.Error(err))
			}
		}()
		p.log.Info("listening", zap.String("listener", l.String()),
			zap.String("advertise", l.advHost+":"+strconv.Itoa(l.advPort)))
		if l.replySourceErr != nil {
			p.log.Warn("UDP answers leave from the kernel's choice of source address, not the address each peer wrote to",
				zap.String("listener", l.String()), zap.Error(l.replySourceErr))
		}
	}
	return nil
}

// Addr returns the bound address of the first listener of network ("udp",
// "tcp", "tls"), or "".
func (p *Proxy) Addr(network string) string {
	if l, ok := p.byNetwork[network]; ok {
		return l.bound.String()
	}
	return ""
}

// Listeners lists the bound listeners as scheme://addr.
func (p *Proxy) Listeners() []string {
	out := make([]string, 0, len(p.listeners))
	for _, l := range p.listeners {
		out = append(out, l.String())
	}
	return out
}

// Drain makes the proxy refuse new calls with 503 while it keeps routing
// requests of established dialogs and finishing transactions in flight.
func (p *Proxy) Drain() { p.draining.Store(true) }

// Draining reports whether Drain was called.
func (p *Proxy) Draining() bool { return p.draining.Load() }

// InFlight is the number of requests whose handling has not finished (an
// INVITE counts until its final response).
func (p *Proxy) InFlight() int64 { return p.inflight.Load() }

// Close stops the listeners and the SIP stack.
func (p *Proxy) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	if p.stopBg != nil {
		p.stopBg()
	}
	p.closeListeners()
	var err error
	if p.ua != nil {
		err = p.ua.Close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) closeListeners() {
	for _, l := range p.listeners {
		l.close()
	}
}

// listenerFor returns the listener to send over transport ("UDP", "TCP",
// "TLS"), falling back to any listener.
func (p *Proxy) listenerFor(transport string) *listener {
	switch transport {
	case "UDP", "udp":
		if l := p.byNetwork["udp"]; l != nil {
			return l
		}
	case "TCP", "tcp":
		if l := p.byNetwork["tcp"]; l != nil {
			return l
		}
	case "TLS", "tls":
		if l := p.byNetwork["tls"]; l != nil {
			return l
		}
	}
	return p.listeners[0]
}

// laddrFor is the local address requests over transport leave from: the
// UDP listener for UDP, nothing (the connection pool decides) otherwise.
func (p *Proxy) laddrFor(transport string) sip.Addr {
	if transport == "UDP" {
		if l := p.byNetwork["udp"]; l != nil {
			return l.laddr
		}
	}
	return sip.Addr{}
}

// handle is the single entry point for every request sipgo hands us.
func (p *Proxy) handle(req *sip.Request, tx sip.ServerTransaction) {
	p.inflight.Add(1)
	defer p.inflight.Add(-1)
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic handling request", zap.Any("panic", r),
				zap.String("method", string(req.Method)), zap.ByteString("stack", debug.Stack()))
			if req.Method != sip.ACK && tx != nil {
				p.respond(req, tx, 500, "Server Internal Error")
			}
		}
	}()

	if !p.admit(req, tx) {
		return
	}
	src := p.sourceNode(req)
	dir := metrics.FromCarrier
	if src != nil {
		dir = metrics.FromNode
	}
	switch req.Method {
	case sip.ACK:
		// Forwarded in arrival order by onWire, or absorbed.
		return
	case sip.INVITE:
		p.trackInvite(req, tx)
	case sip.CANCEL:
		p.metrics.Request(req.Method, dir)
		p.handleCancel(req, tx)
		return
	}
	p.metrics.Request(req.Method, dir)

	mf, rej := checkRequest(req)
	if rej != nil {
		if rej.code == 483 && req.Method == sip.OPTIONS && req.To() != nil && tagOf(req.To().Params) == "" {
			// §16.3 step 3: a proxy may answer an OPTIONS whose hops ran out.
			p.answerOptions(req, tx)
			return
		}
		p.reject(req, tx, rej)
		return
	}
	if p.looped(req) {
		p.reject(req, tx, &rejection{code: 482, reason: "Loop Detected", label: "loop"})
		return
	}
	if tagOf(req.To().Params) != "" {
		p.inDialog(req, tx, mf)
		return
	}
	if src != nil {
		p.fromNode(req, tx, mf, src)
		return
	}
	if req.Method == sip.OPTIONS {
		// Carriers ping their trunk: that is us.
		p.answerOptions(req, tx)
		return
	}
	p.newCall(req, tx, mf)
}

// sourceNode returns the configured node req came from, or nil. Over UDP
// the source must be the node's address exactly; over TCP and TLS the node
// may connect from an ephemeral port, so its IP is enough.
func (p *Proxy) sourceNode(req *sip.Request) *dispatcher.Node {
	ap, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return nil
	}
	n := p.disp.Snapshot().NodeBySource(ap)
	if n == nil {
		return nil
	}
	if req.Transport() == "UDP" && n.Spec.Addr.Addr().Unmap() == ap.Addr().Unmap() && n.Spec.Addr.Port() != ap.Port() {
		return nil
	}
	return n
}

// respond sends a response of our own to req.
func (p *Proxy) respond(req *sip.Request, tx sip.ServerTransaction, code int, reason string, hdrs ...sip.Header) {
	if p.metrics != nil {
		dir := metrics.FromCarrier
		if p.sourceNode(req) != nil {
			dir = metrics.FromNode
		}
		p.metrics.Response(req.Method, code, dir)
	}
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	res.AppendHeader(p.serverHdr)
	for _, h := range hdrs {
		res.AppendHeader(h)
	}
	if err := tx.Respond(res); err != nil {
		p.debug("respond failed", zap.Int("code", code), zap.Error(err))
	}
}

func (p *Proxy) reject(req *sip.Request, tx sip.ServerTransaction, r *rejection) {
	p.metrics.Rejected(r.label)
	p.debug("request rejected", zap.String("method", string(req.Method)),
		zap.Int("code", r.code), zap.String("reason", r.label), zap.String("source", req.Source()))
	p.respond(req, tx, r.code, r.reason, r.hdrs...)
}

// debug logs at debug level without building fields when disabled (hot path).
func (p *Proxy) debug(msg string, fields ...zap.Field) {
	if ce := p.log.Check(zapcore.DebugLevel, msg); ce != nil {
		ce.Write(fields...)
	}
}

// bg runs f in a goroutine tied to the proxy's lifetime, with recover.
func (p *Proxy) bg(f func()) {
	go func() {
		defer func() {
			if r := recover(); r != nil {
				p.log.Error("panic in background task", zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			}
		}()
		f()
	}()
}

func storeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 2*time.Second)
}

// NodeDown tells the proxy that health declared node id down: new calls
// still ringing there (no final answer yet) are CANCELled on it and moved
// to the next candidate, so that a crash during ringing costs the caller
// nothing but a second 180. Calls already answered stay: their node owns
// them.
func (p *Proxy) NodeDown(id string) {
	if v, ok := p.downSignals.LoadAndDelete(id); ok {
		close(v.(chan struct{}))
	}
}

// downSignal returns the channel closed when node id is next declared down.
func (p *Proxy) downSignal(id string) <-chan struct{} {
	if v, ok := p.downSignals.Load(id); ok {
		return v.(chan struct{})
	}
	v, _ := p.downSignals.LoadOrStore(id, make(chan struct{}))
	return v.(chan struct{})
}

// admit runs the guard's request check (trunk conditions, reject mode,
// rate limits not applied before parsing). On refusal it has answered as
// configured, or not at all (a silent drop: sipgo then ends the
// transaction without sending its automatic 100 Trying). ACKs are never
// answered. The refusal is counted by the guard.
func (p *Proxy) admit(req *sip.Request, tx sip.ServerTransaction) bool {
	if p.guard == nil {
		return true
	}
	ap, err := netip.ParseAddrPort(req.Source())
	if err != nil {
		return false
	}
	to := req.To()
	d := p.guard.Admit(guard.Request{
		Source:         ap.Addr().Unmap(),
		Transport:      req.Transport(),
		Method:         string(req.Method),
		InDialog:       to != nil && tagOf(to.Params) != "",
		RequestURIHost: req.Recipient.Host,
		Header: func(name string) string {
			if h := req.GetHeader(name); h != nil {
				return h.Value()
			}
			return ""
		},
	})
	if d.Admitted() {
		return true
	}
	if tx != nil && req.Method != sip.ACK {
		switch d.Code {
		case 403:
			p.respond(req, tx, 403, "Forbidden")
		case 503:
			p.respond(req, tx, 503, "Service Unavailable", p.retryAfter)
		}
	}
	p.debug("request refused by the guard", zap.String("method", string(req.Method)),
		zap.String("source", req.Source()), zap.String("reason", d.Reason.String()))
	return false
}
