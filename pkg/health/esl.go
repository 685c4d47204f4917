package health

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
)

// ESLConfig configures one node's Event Socket client. Zero values take the
// defaults noted.
type ESLConfig struct {
	// NodeID names the node in logs.
	NodeID string
	// Addr is FreeSWITCH's Event Socket, host:port.
	Addr string
	// Password is event_socket.conf.xml's password (default "ClueCon").
	Password string
	// DialTimeout bounds one TCP connect (default 1s).
	DialTimeout time.Duration
	// PollInterval is how often `api status` and `api fsctl pause_check`
	// are sent (default 1s). HEARTBEAT alone comes only every 20 s by
	// default, far too slow to steer calls by.
	PollInterval time.Duration
	// ReplyTimeout bounds the wait for any reply (the greeting included): a
	// FreeSWITCH that keeps the TCP connection open but answers nothing
	// (stopped, or wedged) is declared hung after it and the connection is
	// closed (default 2s).
	ReplyTimeout time.Duration
	// ProfileCheckEvery is how often `api sofia status` is sent; 0 (or
	// negative) never sends it. Unlike the other fields, 0 is not replaced
	// by a default: the configuration's default (health.esl.profile_check)
	// is 5s, and 0 there disables the check.
	ProfileCheckEvery time.Duration
	// BackoffMin and BackoffMax bound the reconnect backoff: exponential,
	// with full jitter (defaults 200ms and 5s).
	BackoffMin time.Duration
	BackoffMax time.Duration
	// AuthBackoff is the retry interval after a wrong password (default
	// 30s). The failure is logged once at error level, not per retry.
	AuthBackoff time.Duration
	// SourceAddr is an optional local IP to dial from (a monitoring
	// network).
	SourceAddr string
	// ChannelEvents subscribes to CHANNEL_CREATE and
	// CHANNEL_HANGUP_COMPLETE to follow the session count between polls
	// (default false: the polls are enough and far cheaper).
	ChannelEvents bool
}

// Defaults of ESLConfig.
const (
	defaultESLPassword       = "ClueCon"
	defaultESLDialTimeout    = time.Second
	defaultESLPollInterval   = time.Second
	defaultESLReplyTimeout   = 2 * time.Second
	defaultESLBackoffMin     = 200 * time.Millisecond
	defaultESLBackoffMax     = 5 * time.Second
	defaultESLAuthBackoff    = 30 * time.Second
	eslTCPKeepAlive          = 5 * time.Second
	eslMaxEventReportsPerSec = 10
)

func (c ESLConfig) withDefaults() ESLConfig {
	if c.Password == "" {
		c.Password = defaultESLPassword
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = defaultESLDialTimeout
	}
	if c.PollInterval <= 0 {
		c.PollInterval = defaultESLPollInterval
	}
	if c.ReplyTimeout <= 0 {
		c.ReplyTimeout = defaultESLReplyTimeout
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = defaultESLBackoffMin
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = defaultESLBackoffMax
	}
	c.BackoffMax = max(c.BackoffMax, c.BackoffMin)
	if c.AuthBackoff <= 0 {
		c.AuthBackoff = defaultESLAuthBackoff
	}
	return c
}

// ESLStatus is what the client knows about its node.
type ESLStatus struct {
	// Connected: authenticated and answering polls.
	Connected bool
	// Err says why not connected (nil when connected). It wraps
	// ErrESLAuth, ErrESLTimeout, ErrESLDisconnected or ErrESLProtocol, or is
	// the dial error.
	Err error
	// Refused: the last connect attempt was refused (nothing listening: the
	// FreeSWITCH process is gone).
	Refused bool
	// AuthFailed: FreeSWITCH rejected the password.
	AuthFailed bool
	// Since is when Connected last changed.
	Since time.Time

	// Figures. They are cleared when the connection goes down and are
	// meaningful only while Load.At is non-zero. Load.At is the time of the
	// poll or HEARTBEAT that produced them; CHANNEL_CREATE and
	// CHANNEL_HANGUP_COMPLETE events move Load.Sessions by one between
	// polls without changing At.
	Load dispatcher.Load
	// Paused: `fsctl pause_check` says true (fsctl pause, or fsctl
	// shutdown asap): no new calls.
	Paused bool
	// Ready: `status` says "is ready" (false when paused or shutting down).
	Ready bool
	// ProfileKnown: a `sofia status` answer was parsed.
	ProfileKnown bool
	// ProfilesRunning: sofia status lists at least one profile and every
	// profile is RUNNING.
	ProfilesRunning bool

	// Version is FreeSWITCH's, e.g. "1.11.0-release": from HEARTBEAT's
	// FreeSWITCH-Version without its "~64bit"-style suffix, or, until the
	// first HEARTBEAT on a connection, the first word of `status`'s version.
	Version string
	// LastHeartbeat is when the last HEARTBEAT event arrived.
	LastHeartbeat time.Time
}

// Errors an ESLStatus.Err wraps; test with errors.Is.
var (
	// ErrESLAuth: FreeSWITCH answered the password with -ERR invalid.
	ErrESLAuth = errors.New("esl: authentication failed: wrong esl_password")
	// ErrESLTimeout: a reply did not come within ReplyTimeout; the node is
	// hung (or the network to it is).
	ErrESLTimeout = errors.New("esl: no reply in time")
	// ErrESLDisconnected: the connection ended: EOF, reset, a disconnect
	// notice or a SHUTDOWN event.
	ErrESLDisconnected = errors.New("esl: disconnected")
	// ErrESLProtocol: the peer sent something FreeSWITCH would not.
	ErrESLProtocol = errors.New("esl: protocol error")
	// errESLStopped is Err after Run returned.
	errESLStopped = errors.New("esl: client stopped")
	// errESLNotYet is Err before the first connection attempt ended.
	errESLNotYet = errors.New("esl: not connected yet")
)

// eslSubscription is the event subscription sent after auth. SHUTDOWN comes
// up to a second before FreeSWITCH's disconnect notice; treating it as the
// end of the connection takes a stopping node out of rotation that much
// sooner. Channel events are not subscribed by default: the polls keep the
// figures fresh every PollInterval, while channel events cost about 2 KB
// each on the wire and in parsing — megabytes per second per node at
// thousands of calls per second (ESLConfig.ChannelEvents turns them on).
const eslSubscription = "event plain HEARTBEAT SHUTDOWN"

// eslSubscriptionChannels also follows calls between polls.
const eslSubscriptionChannels = "event plain HEARTBEAT CHANNEL_CREATE CHANNEL_HANGUP_COMPLETE SHUTDOWN"

// ESLClient keeps one authenticated Event Socket connection to a node, polls
// it and turns what it hears into an ESLStatus. See NewESLClient.
type ESLClient struct {
	cfg    ESLConfig
	log    *zap.Logger
	report func(ESLStatus)

	mu  sync.Mutex
	pub ESLStatus // what Status returns

	// Owned by the Run goroutine.
	cur        ESLStatus
	authLogged bool // the current streak of auth failures was logged
}

// NewESLClient returns a client for one node; Run drives it. report, if not
// nil, is called from Run's goroutine (it must not block long) after every
// change of Connected, Err, Refused or AuthFailed and after every completed
// poll or HEARTBEAT with fresh figures; CHANNEL events are reported at most
// ten times a second.
func NewESLClient(cfg ESLConfig, log *zap.Logger, report func(ESLStatus)) *ESLClient {
	if log == nil {
		log = zap.NewNop()
	}
	if report == nil {
		report = func(ESLStatus) {}
	}
	cfg = cfg.withDefaults()
	c := &ESLClient{
		cfg:    cfg,
		log:    log.Named("health.esl").With(zap.String("node", cfg.NodeID), zap.String("addr", cfg.Addr)),
		report: report,
	}
	c.cur.Since, c.cur.Err = time.Now(), errESLNotYet
	c.pub = c.cur
	return c
}

// Status returns the latest status; safe for concurrent use.
func (c *ESLClient) Status() ESLStatus {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pub
}

// Run connects, authenticates, subscribes and polls, and reconnects with
// backoff whenever the connection fails, until ctx is done. It returns once
// ctx is done and the connection is closed.
func (c *ESLClient) Run(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		wasUp, err := c.connectOnce(ctx)
		if ctx.Err() != nil {
			break
		}
		var wait time.Duration
		if errors.Is(err, ErrESLAuth) {
			wait = c.cfg.AuthBackoff
		} else {
			if wasUp {
				attempt = 0
			}
			wait = c.backoff(attempt)
			attempt++
		}
		c.log.Debug("ESL reconnecting", zap.Duration("in", wait))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	c.setDown(errESLStopped, false, false)
}

// backoff returns the wait before reconnect attempt n (0-based): uniform in
// [0, min(BackoffMax, BackoffMin·2ⁿ)] ("full jitter"), so that a balancer
// fleet does not reconnect to a restarted node in lockstep.
func (c *ESLClient) backoff(n int) time.Duration {
	ceiling := c.cfg.BackoffMax
	if n < 30 {
		if d := c.cfg.BackoffMin << n; d > 0 && d < ceiling {
			ceiling = d
		}
	}
	return rand.N(ceiling + 1)
}

// connectOnce runs one connection from dial to close. wasUp tells whether it
// got as far as Connected.
func (c *ESLClient) connectOnce(ctx context.Context) (wasUp bool, err error) {
	nc, err := c.dial(ctx)
	if err != nil {
		if ctx.Err() == nil {
			c.setDown(err, isRefused(err), false)
		}
		return false, err
	}
	s := newESLSession(c, nc)
	err = s.run(ctx)
	if ctx.Err() == nil {
		c.setDown(err, false, errors.Is(err, ErrESLAuth))
	}
	return s.polled, err
}

func (c *ESLClient) dial(ctx context.Context) (net.Conn, error) {
	if strings.ContainsAny(c.cfg.Password, "\r\n") {
		return nil, errors.New("esl: password contains a line break")
	}
	d := net.Dialer{Timeout: c.cfg.DialTimeout, KeepAlive: eslTCPKeepAlive}
	if c.cfg.SourceAddr != "" {
		ip, err := netip.ParseAddr(c.cfg.SourceAddr)
		if err != nil {
			return nil, fmt.Errorf("esl: source address %q: %w", c.cfg.SourceAddr, err)
		}
		d.LocalAddr = &net.TCPAddr{IP: ip.AsSlice(), Zone: ip.Zone()}
	}
	return d.DialContext(ctx, "tcp", c.cfg.Addr)
}

func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }

// setDown records that the node is not connected, clears the figures,
// reports if anything a caller acts on changed, and logs without repeating
// itself: a lost connection once at warn, a wrong password once at error
// until the next successful auth, repeated identical failures at debug.
func (c *ESLClient) setDown(err error, refused, authFailed bool) {
	st := c.cur
	wasUp := st.Connected
	changed := wasUp || st.Refused != refused || st.AuthFailed != authFailed || errText(st.Err) != errText(err)
	if wasUp {
		st.Since = time.Now()
	}
	st.Connected, st.Err, st.Refused, st.AuthFailed = false, err, refused, authFailed
	st.Load, st.Paused, st.Ready, st.ProfileKnown, st.ProfilesRunning = dispatcher.Load{}, false, false, false, false
	c.cur = st

	switch {
	case errors.Is(err, errESLStopped):
		c.log.Debug("ESL client stopped")
	case authFailed && !c.authLogged:
		c.authLogged = true
		c.log.Error(fmt.Sprintf("ESL authentication failed for node %s: wrong esl_password", c.cfg.NodeID),
			zap.Duration("retry_every", c.cfg.AuthBackoff))
	case wasUp:
		c.log.Warn("ESL connection lost", zap.Error(err))
	case changed && !authFailed:
		c.log.Warn("ESL connection failed", zap.Error(err), zap.Bool("refused", refused))
	default:
		c.log.Debug("ESL connection failed again", zap.Error(err))
	}
	c.store()
	if changed {
		c.report(st)
	}
}

// store publishes cur for Status.
func (c *ESLClient) store() {
	c.mu.Lock()
	c.pub = c.cur
	c.mu.Unlock()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// eslCmd is what a reply answers.
type eslCmd int

const (
	cmdGreeting eslCmd = iota // not sent: the auth/request FreeSWITCH opens with
	cmdAuth
	cmdEvents
	cmdSofia
	cmdStatus
	cmdPause
)

type eslPending struct {
	kind eslCmd
	cmd  string // as sent, for errors
	sent time.Time
}

type eslRead struct {
	msg *eslMessage
	err error
}

// eslSession is one connection. Everything but the reader goroutine runs on
// Run's goroutine: commands go out from here and their replies come back in
// order, each matched to the oldest pending command; events, which
// FreeSWITCH writes whenever the connection is idle, may arrive between any
// two replies and are told apart by their Content-Type.
type eslSession struct {
	c    *ESLClient
	nc   net.Conn
	msgs chan eslRead
	done chan struct{}
	wg   sync.WaitGroup
	wbuf []byte

	pending     []eslPending
	subscribed  bool
	pollOut     bool // a status/pause_check round is in flight
	profileOut  bool // a sofia status is in flight
	nextPoll    time.Time
	nextProfile time.Time
	polled      bool // a poll round completed: Connected
	hbVersion   bool // Version came from a HEARTBEAT on this connection

	dirty      bool // figures moved by CHANNEL events, not yet reported
	lastReport time.Time
	reportGap  time.Duration

	statusWarned, pauseWarned bool
}

func newESLSession(c *ESLClient, nc net.Conn) *eslSession {
	return &eslSession{
		c:         c,
		nc:        nc,
		msgs:      make(chan eslRead, 64),
		done:      make(chan struct{}),
		reportGap: min(time.Second/eslMaxEventReportsPerSec, c.cfg.PollInterval),
	}
}

// run drives the connection until it fails or ctx is done, and closes it.
// The error says why it ended (nil when ctx ended it).
func (s *eslSession) run(ctx context.Context) error {
	s.wg.Add(1)
	go s.readLoop()
	defer func() {
		close(s.done)
		_ = s.nc.Close()
		s.wg.Wait()
	}()

	s.pending = append(s.pending, eslPending{kind: cmdGreeting, cmd: "(greeting)", sent: time.Now()})
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		if err := s.tick(now); err != nil {
			return err
		}
		timer.Reset(s.nextWake(now).Sub(now))
		select {
		case <-ctx.Done():
			s.sayBye()
			return nil
		case r := <-s.msgs:
			if r.err != nil {
				return s.readError(r.err)
			}
			if err := s.handle(r.msg, time.Now()); err != nil {
				return err
			}
		case <-timer.C:
		}
	}
}

// readLoop reads messages and hands them to run until the connection is
// closed. The read deadline is a backstop only: run notices a missing reply
// first, and closing the connection ends the read.
func (s *eslSession) readLoop() {
	defer s.wg.Done()
	defer func() {
		if p := recover(); p != nil {
			s.c.log.Error("ESL reader panicked", zap.Any("panic", p), zap.ByteString("stack", debug.Stack()))
			select {
			case s.msgs <- eslRead{err: fmt.Errorf("%w: reader panicked: %v", ErrESLProtocol, p)}:
			case <-s.done:
			}
		}
	}()
	br := bufio.NewReaderSize(s.nc, 16<<10)
	idle := s.c.cfg.PollInterval + 2*s.c.cfg.ReplyTimeout
	for {
		_ = s.nc.SetReadDeadline(time.Now().Add(idle))
		m, err := readESLMessage(br, eslMaxBody)
		select {
		case s.msgs <- eslRead{msg: m, err: err}:
		case <-s.done:
			return
		}
		if err != nil {
			return
		}
	}
}

func (s *eslSession) readError(err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: connection closed by FreeSWITCH", ErrESLDisconnected)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%w: nothing read for %s", ErrESLTimeout, s.c.cfg.PollInterval+2*s.c.cfg.ReplyTimeout)
	case errors.Is(err, errESLHeaderTooLarge), errors.Is(err, errESLBodyTooLarge),
		errors.Is(err, errESLBadHeader), errors.Is(err, errESLBadLength), errors.Is(err, ErrESLProtocol):
		return fmt.Errorf("%w: %w", ErrESLProtocol, err)
	default:
		return fmt.Errorf("%w: %w", ErrESLDisconnected, err)
	}
}

// tick does what is due at now: declare a hung node, send polls, report
// figures moved by events.
func (s *eslSession) tick(now time.Time) error {
	cfg := &s.c.cfg
	if len(s.pending) > 0 {
		if p := s.pending[0]; now.Sub(p.sent) >= cfg.ReplyTimeout {
			return fmt.Errorf("%w: no reply to %q within %s", ErrESLTimeout, p.cmd, cfg.ReplyTimeout)
		}
	}
	if s.subscribed {
		if cfg.ProfileCheckEvery > 0 && !s.profileOut && !now.Before(s.nextProfile) {
			s.queue(cmdSofia, "api sofia status", now)
			s.profileOut = true
			s.nextProfile = now.Add(cfg.ProfileCheckEvery)
		}
		if !s.pollOut && !now.Before(s.nextPoll) {
			s.queue(cmdStatus, "api status", now)
			s.queue(cmdPause, "api fsctl pause_check", now)
			s.pollOut = true
			s.nextPoll = now.Add(cfg.PollInterval)
		}
	}
	if s.dirty && now.Sub(s.lastReport) >= s.reportGap {
		s.publish(now)
	}
	return s.flush(now)
}

// nextWake is when tick has something to do next.
func (s *eslSession) nextWake(now time.Time) time.Time {
	cfg := &s.c.cfg
	wake := now.Add(time.Hour)
	earlier := func(t time.Time) {
		if t.Before(wake) {
			wake = t
		}
	}
	if len(s.pending) > 0 {
		earlier(s.pending[0].sent.Add(cfg.ReplyTimeout))
	}
	if s.subscribed {
		if !s.pollOut {
			earlier(s.nextPoll)
		}
		if cfg.ProfileCheckEvery > 0 && !s.profileOut {
			earlier(s.nextProfile)
		}
	}
	if s.dirty {
		earlier(s.lastReport.Add(s.reportGap))
	}
	return wake
}

// queue adds a command to the write buffer and expects its reply.
func (s *eslSession) queue(kind eslCmd, cmd string, now time.Time) {
	s.wbuf = append(s.wbuf, cmd...)
	s.wbuf = append(s.wbuf, "\n\n"...)
	s.pending = append(s.pending, eslPending{kind: kind, cmd: cmd, sent: now})
}

// flush writes the queued commands in one write (FreeSWITCH reads
// pipelined commands one after the other).
func (s *eslSession) flush(now time.Time) error {
	if len(s.wbuf) == 0 {
		return nil
	}
	_ = s.nc.SetWriteDeadline(now.Add(s.c.cfg.ReplyTimeout))
	_, err := s.nc.Write(s.wbuf)
	s.wbuf = s.wbuf[:0]
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return fmt.Errorf("%w: write blocked for %s", ErrESLTimeout, s.c.cfg.ReplyTimeout)
		}
		return fmt.Errorf("%w: %w", ErrESLDisconnected, err)
	}
	return nil
}

// sayBye asks FreeSWITCH to close its side, so it logs a normal goodbye;
// best effort, nothing waits for the reply.
func (s *eslSession) sayBye() {
	_ = s.nc.SetWriteDeadline(time.Now().Add(min(s.c.cfg.ReplyTimeout, 100*time.Millisecond)))
	_, _ = s.nc.Write([]byte("exit\n\n"))
}

// pop takes the oldest pending command for a reply of the given family.
func (s *eslSession) pop(m *eslMessage, want ...eslCmd) (eslPending, error) {
	if len(s.pending) == 0 {
		return eslPending{}, fmt.Errorf("%w: unsolicited %s", ErrESLProtocol, m.contentType())
	}
	p := s.pending[0]
	for _, k := range want {
		if p.kind == k {
			s.pending = s.pending[1:]
			return p, nil
		}
	}
	return eslPending{}, fmt.Errorf("%w: %s while waiting for the reply to %q", ErrESLProtocol, m.contentType(), p.cmd)
}

// handle acts on one message from FreeSWITCH.
func (s *eslSession) handle(m *eslMessage, now time.Time) error {
	switch ct := m.contentType(); ct {
	case "auth/request":
		if _, err := s.pop(m, cmdGreeting); err != nil {
			return err
		}
		s.wbuf = append(s.wbuf, "auth "...)
		s.wbuf = append(s.wbuf, s.c.cfg.Password...)
		s.wbuf = append(s.wbuf, "\n\n"...)
		s.pending = append(s.pending, eslPending{kind: cmdAuth, cmd: "auth", sent: now})
		return nil
	case "command/reply":
		p, err := s.pop(m, cmdAuth, cmdEvents)
		if err != nil {
			return err
		}
		return s.commandReply(p, m.header("Reply-Text"), now)
	case "api/response":
		p, err := s.pop(m, cmdSofia, cmdStatus, cmdPause)
		if err != nil {
			return err
		}
		s.apiResponse(p, m.body, now)
		return nil
	case "text/event-plain":
		return s.event(m.body, now)
	case "text/disconnect-notice":
		notice := strings.TrimSpace(string(truncateForError(m.body)))
		return fmt.Errorf("%w: FreeSWITCH said %q", ErrESLDisconnected, notice)
	case "text/rude-rejection":
		return fmt.Errorf("%w: FreeSWITCH rejected this address (event socket apply-inbound-acl): %q",
			ErrESLDisconnected, strings.TrimSpace(string(truncateForError(m.body))))
	case "":
		return fmt.Errorf("%w: message without Content-Type", ErrESLProtocol)
	default:
		// log/data, other event formats: not asked for, harmless.
		s.c.log.Debug("ESL message ignored", zap.String("content_type", ct))
		return nil
	}
}

func (s *eslSession) commandReply(p eslPending, reply string, now time.Time) error {
	switch p.kind {
	case cmdAuth:
		switch reply {
		case "+OK accepted":
			s.c.authLogged = false
			sub := eslSubscription
			if s.c.cfg.ChannelEvents {
				sub = eslSubscriptionChannels
			}
			s.queue(cmdEvents, sub, now)
			return nil
		case "-ERR invalid":
			return ErrESLAuth
		}
		return fmt.Errorf("%w: auth answered %q", ErrESLProtocol, reply)
	default: // cmdEvents
		if !strings.HasPrefix(reply, "+OK") {
			return fmt.Errorf("%w: %q answered %q", ErrESLProtocol, p.cmd, reply)
		}
		s.subscribed = true
		s.nextPoll, s.nextProfile = now, now
		return nil
	}
}

func (s *eslSession) apiResponse(p eslPending, body []byte, now time.Time) {
	st := &s.c.cur
	switch p.kind {
	case cmdSofia:
		s.profileOut = false
		st.ProfileKnown, st.ProfilesRunning = parseSofiaStatus(body)
		if !st.ProfileKnown {
			s.c.log.Debug("ESL sofia status not understood", zap.ByteString("reply", truncateForError(body)))
		}
		if s.polled {
			s.publish(now)
		}
	case cmdStatus:
		f, err := parseStatus(body)
		if err != nil {
			if !s.statusWarned {
				s.statusWarned = true
				s.c.log.Warn("ESL status reply not understood; load figures unknown", zap.Error(err))
			}
			return
		}
		st.Load.Sessions, st.Load.MaxSessions = f.sessions, f.maxSessions
		if f.haveIdleCPU {
			st.Load.IdleCPU = f.idleCPU
		}
		if f.haveSPS {
			st.Load.SessionsPerSec = f.sessionsPerSecBudget()
		}
		st.Load.At = now
		st.Ready = f.ready
		if !s.hbVersion && f.version != "" {
			st.Version = f.version
		}
	case cmdPause:
		s.pollOut = false
		paused, err := parseBoolReply(body)
		if err != nil {
			if !s.pauseWarned {
				s.pauseWarned = true
				s.c.log.Warn("ESL fsctl pause_check reply not understood", zap.Error(err))
			}
		} else {
			st.Paused = paused
		}
		if !s.polled {
			s.polled = true
			st.Connected, st.Err, st.Refused, st.AuthFailed, st.Since = true, nil, false, false, now
			s.c.log.Info("ESL connected", zap.String("version", st.Version))
		}
		s.publish(now)
	}
}

// event handles a text/event-plain message. An event that does not parse is
// dropped: the framing around it was sound, so the connection is fine.
func (s *eslSession) event(body []byte, now time.Time) error {
	hs, err := parseEventPlain(body)
	if err != nil {
		s.c.log.Debug("ESL event dropped", zap.Error(err))
		return nil
	}
	st := &s.c.cur
	switch name := hs.value("Event-Name"); name {
	case "HEARTBEAT":
		fresh := false
		if v, err := parseCount(hs.value("Session-Count")); err == nil {
			st.Load.Sessions, fresh = v, true
		}
		if v, err := parseCount(hs.value("Max-Sessions")); err == nil {
			st.Load.MaxSessions, fresh = v, true
		}
		if v, err := parseCount(hs.value("Session-Per-Sec")); err == nil {
			st.Load.SessionsPerSec, fresh = v, true
		}
		if v, err := parsePercent(hs.value("Idle-CPU")); err == nil {
			st.Load.IdleCPU, fresh = v, true
		}
		if fresh {
			st.Load.At = now
		}
		if v := eslVersion(hs.value("FreeSWITCH-Version")); v != "" {
			st.Version, s.hbVersion = v, true
		}
		st.LastHeartbeat = now
		if s.polled {
			s.publish(now)
		}
	case "CHANNEL_CREATE", "CHANNEL_HANGUP_COMPLETE":
		// Session-Count counts channels, and each channel fires one of
		// each. A channel event FreeSWITCH queued before it ran `status`
		// but delivered after the reply is counted on top of a figure that
		// already includes it; the next poll corrects that, so the error
		// is bounded by one poll round's events.
		if st.Load.At.IsZero() {
			return nil // no base figure to move yet
		}
		if name == "CHANNEL_CREATE" {
			st.Load.Sessions++
		} else {
			st.Load.Sessions = max(st.Load.Sessions-1, 0)
		}
		s.dirty = s.polled
	case "SHUTDOWN":
		return fmt.Errorf("%w: FreeSWITCH is shutting down (SHUTDOWN event)", ErrESLDisconnected)
	}
	return nil
}

// publish makes cur visible to Status and reports it.
func (s *eslSession) publish(now time.Time) {
	s.dirty = false
	s.lastReport = now
	s.c.store()
	s.c.report(s.c.cur)
}

// eslVersion turns HEARTBEAT's FreeSWITCH-Version ("1.11.0-release~64bit")
// into the form `status` prints first ("1.11.0-release").
func eslVersion(v string) string {
	v, _, _ = strings.Cut(v, "~")
	return strings.TrimSpace(v)
}
