package health

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// waitLimit bounds every wait in these tests; nothing should take close to
// it, it only keeps a broken test from hanging.
const waitLimit = 10 * time.Second

// fakeESL is a minimal Event Socket server: it accepts connections and hands
// each to the test, which replays captured FreeSWITCH bytes on it.
type fakeESL struct {
	ln    net.Listener
	conns chan *fakeESLConn
	mu    sync.Mutex
	all   []*fakeESLConn
}

type fakeESLConn struct {
	nc       net.Conn
	br       *bufio.Reader
	accepted time.Time
}

func newFakeESL(t *testing.T) *fakeESL {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	f := &fakeESL{ln: ln, conns: make(chan *fakeESLConn, 64)}
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				close(f.conns)
				return
			}
			c := &fakeESLConn{nc: nc, br: bufio.NewReader(nc), accepted: time.Now()}
			f.mu.Lock()
			f.all = append(f.all, c)
			f.mu.Unlock()
			f.conns <- c
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, c := range f.all {
			_ = c.nc.Close()
		}
	})
	return f
}

func (f *fakeESL) addr() string { return f.ln.Addr().String() }

// accept waits for the client's next connection.
func (f *fakeESL) accept(t *testing.T) *fakeESLConn {
	t.Helper()
	select {
	case c, ok := <-f.conns:
		require.True(t, ok, "listener closed")
		return c
	case <-time.After(waitLimit):
		t.Fatal("the client did not connect")
		return nil
	}
}

// send writes raw bytes; errors are ignored (the client may have gone).
func (c *fakeESLConn) send(b ...[]byte) {
	for _, p := range b {
		_, _ = c.nc.Write(p)
	}
}

// readCmd reads one command block, as FreeSWITCH does: lines up to an empty
// line, leading empty lines skipped.
func (c *fakeESLConn) readCmd() (string, error) {
	var lines []string
	for {
		l, err := c.br.ReadString('\n')
		if err != nil {
			return "", err
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "" {
			if len(lines) == 0 {
				continue
			}
			return strings.Join(lines, "\n"), nil
		}
		lines = append(lines, l)
	}
}

func (c *fakeESLConn) expectCmd(t *testing.T, want string) {
	t.Helper()
	got, err := c.readCmd()
	require.NoError(t, err)
	require.Equal(t, want, got)
}

// fsReplies are the api/response bytes a scripted FreeSWITCH answers polls
// with.
type fsReplies struct {
	status, pause, sofia []byte
	// before, if set, runs before a command is answered (to slip events
	// in between replies); returning false leaves the command unanswered.
	before func(cmd string) bool
}

// serveAuthed plays FreeSWITCH from the greeting up to the subscription
// reply, using the captured bytes, and fails the test on any deviation.
func serveAuthed(t *testing.T, c *fakeESLConn, password string) {
	t.Helper()
	c.send(transcript(t, "greeting"))
	c.expectCmd(t, "auth "+password)
	c.send(transcript(t, "reply-auth-accepted"))
	c.expectCmd(t, eslSubscription)
	c.send(transcript(t, "reply-event-plain"))
}

// servePolls answers api commands until the connection ends, and records
// the commands it saw. It runs on its own goroutine, so it may not use
// require; an unexpected command is returned as an error.
func servePolls(c *fakeESLConn, r fsReplies, seen chan<- string) error {
	for {
		cmd, err := c.readCmd()
		if err != nil {
			return err
		}
		if seen != nil {
			select {
			case seen <- cmd:
			default:
			}
		}
		if r.before != nil && !r.before(cmd) {
			continue
		}
		switch cmd {
		case "api status":
			c.send(r.status)
		case "api fsctl pause_check":
			c.send(r.pause)
		case "api sofia status":
			c.send(r.sofia)
		case "exit":
			c.send(mustTestdata("transcripts", "reply-bye"), mustTestdata("transcripts", "disconnect-goodbye"))
			return nil
		default:
			return fmt.Errorf("unexpected command %q", cmd)
		}
	}
}

// defaultReplies answers like FreeSWITCH in capture D: three calls, not
// paused, the lb profile running.
func defaultReplies(t *testing.T) fsReplies {
	return fsReplies{
		status: transcript(t, "api-status-load"),
		pause:  transcript(t, "api-false"),
		sofia:  transcript(t, "api-sofia-status"),
	}
}

// apiResponse frames a made-up api reply body.
func apiResponse(body string) []byte {
	return fmt.Appendf(nil, "Content-Type: api/response\nContent-Length: %d\n\n%s", len(body), body)
}

// reports records every status the client reports, in order.
type reports struct {
	mu   sync.Mutex
	all  []ESLStatus
	next int // first report waitFor has not consumed
	kick chan struct{}
}

func newReports() *reports { return &reports{kick: make(chan struct{}, 1)} }

func (r *reports) add(st ESLStatus) {
	r.mu.Lock()
	r.all = append(r.all, st)
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// waitFor returns the first report after the last one waitFor returned that
// satisfies ok.
func (r *reports) waitFor(t *testing.T, what string, ok func(ESLStatus) bool) ESLStatus {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		r.mu.Lock()
		for ; r.next < len(r.all); r.next++ {
			if st := r.all[r.next]; ok(st) {
				r.next++
				r.mu.Unlock()
				return st
			}
		}
		r.mu.Unlock()
		select {
		case <-r.kick:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("no report where %s; reports: %+v", what, r.all)
		}
	}
}

func (r *reports) snapshot() []ESLStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ESLStatus(nil), r.all...)
}

func connected(st ESLStatus) bool { return st.Connected }
func down(st ESLStatus) bool      { return !st.Connected && st.Err != nil }

// testESLConfig is a config with intervals short enough for tests.
func testESLConfig(addr string) ESLConfig {
	return ESLConfig{
		NodeID:            "fs1",
		Addr:              addr,
		PollInterval:      time.Hour, // one poll round at connect; tests that want more lower it
		ReplyTimeout:      time.Second,
		ProfileCheckEvery: time.Hour,
		BackoffMin:        10 * time.Millisecond,
		BackoffMax:        50 * time.Millisecond,
		AuthBackoff:       100 * time.Millisecond,
	}
}

// runClient starts a client; the returned stop cancels it and waits for Run
// to return (also done at cleanup).
func runClient(t *testing.T, cfg ESLConfig, log *zap.Logger) (*ESLClient, *reports, func()) {
	t.Helper()
	if log == nil {
		log = zap.NewNop()
	}
	rep := newReports()
	c := NewESLClient(cfg, log, rep.add)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(waitLimit):
				t.Error("Run did not return after cancel")
			}
		})
	}
	t.Cleanup(stop)
	return c, rep, stop
}

func TestESLClientGoodSession(t *testing.T) {
	srv := newFakeESL(t)
	cfg := testESLConfig(srv.addr())
	cfg.PollInterval = 20 * time.Millisecond
	c, rep, _ := runClient(t, cfg, nil)

	conn := srv.accept(t)
	serveAuthed(t, conn, "ClueCon")
	// The first round is pipelined: sofia status, status, pause_check.
	conn.expectCmd(t, "api sofia status")
	conn.expectCmd(t, "api status")
	conn.expectCmd(t, "api fsctl pause_check")
	r := defaultReplies(t)
	conn.send(r.sofia, r.status, r.pause)

	st := rep.waitFor(t, "connected", connected)
	assert.NoError(t, st.Err)
	assert.False(t, st.Refused)
	assert.False(t, st.AuthFailed)
	assert.False(t, st.Since.IsZero())
	// From capture D's status: "3 session(s) - peak 3", "1000 session(s)
	// max", "1 session(s) per Sec out of max 200", "min idle cpu 0.00/2.27".
	assert.Equal(t, int64(3), st.Load.Sessions)
	assert.Equal(t, int64(1000), st.Load.MaxSessions)
	assert.InDelta(t, 2.27, st.Load.IdleCPU, 1e-9)
	assert.Equal(t, int64(199), st.Load.SessionsPerSec)
	assert.False(t, st.Load.At.IsZero())
	assert.True(t, st.Ready)
	assert.False(t, st.Paused)
	assert.True(t, st.ProfileKnown)
	assert.True(t, st.ProfilesRunning)
	assert.Equal(t, "1.11.0-release", st.Version)
	assert.True(t, st.LastHeartbeat.IsZero())

	// Polls keep coming every PollInterval, while a HEARTBEAT (capture D:
	// Session-Count 3, Max-Sessions 3, Idle-CPU 2.533333) arrives between
	// them.
	seen := make(chan string, 100)
	go func() { _ = servePolls(conn, r, seen) }()
	for range 3 {
		waitCmd(t, seen, "api status")
	}
	later := rep.waitFor(t, "figures from a later poll", func(s ESLStatus) bool { return s.Load.At.After(st.Load.At) })
	assert.True(t, later.Connected)
	assert.Equal(t, st.Load.Sessions, later.Load.Sessions)
	conn.send(transcript(t, "event-heartbeat-plain-load"))
	st = rep.waitFor(t, "a heartbeat", func(st ESLStatus) bool { return !st.LastHeartbeat.IsZero() })
	assert.True(t, st.Connected)
	assert.Equal(t, int64(3), st.Load.Sessions)
	assert.Equal(t, int64(3), st.Load.MaxSessions)
	assert.InDelta(t, 2.533333, st.Load.IdleCPU, 1e-9)
	assert.Equal(t, int64(200), st.Load.SessionsPerSec)
	assert.Equal(t, st.LastHeartbeat, st.Load.At)
	assert.Equal(t, "1.11.0-release", st.Version)

	// Status agrees with what was reported, and is safe to call meanwhile.
	got := c.Status()
	assert.True(t, got.Connected)
	assert.False(t, got.LastHeartbeat.IsZero())
}

// waitCmd waits until the fake server has seen cmd.
func waitCmd(t *testing.T, seen <-chan string, cmd string) {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case got := <-seen:
			if got == cmd {
				return
			}
		case <-deadline:
			t.Fatalf("the client did not send %q", cmd)
		}
	}
}

func TestESLClientWrongPassword(t *testing.T) {
	srv := newFakeESL(t)
	cfg := testESLConfig(srv.addr())
	cfg.Password = "wrong"
	core, logs := observer.New(zapcore.DebugLevel)
	c, rep, _ := runClient(t, cfg, zap.New(core))

	// FreeSWITCH's answer to a bad password (capture A): -ERR invalid, a
	// disconnect notice, close.
	var accepted []time.Time
	for range 4 {
		conn := srv.accept(t)
		accepted = append(accepted, conn.accepted)
		conn.send(transcript(t, "greeting"))
		conn.expectCmd(t, "auth wrong")
		conn.send(transcript(t, "reply-auth-invalid"), transcript(t, "disconnect-goodbye"))
		_ = conn.nc.Close()
	}

	st := c.Status()
	assert.False(t, st.Connected)
	assert.True(t, st.AuthFailed)
	assert.False(t, st.Refused)
	require.ErrorIs(t, st.Err, ErrESLAuth)

	// Retried every AuthBackoff, not on the fast reconnect backoff.
	for i := 1; i < len(accepted); i++ {
		assert.GreaterOrEqual(t, accepted[i].Sub(accepted[i-1]), cfg.AuthBackoff, "attempt %d came too soon", i)
	}
	// Logged once at error level; the retries only at debug.
	msg := "ESL authentication failed for node fs1: wrong esl_password"
	assert.Equal(t, 1, logs.FilterMessage(msg).Len())
	assert.Equal(t, zapcore.ErrorLevel, logs.FilterMessage(msg).All()[0].Level)
	assert.GreaterOrEqual(t, logs.FilterMessage("ESL connection failed again").FilterLevelExact(zapcore.DebugLevel).Len(), 2)
	assert.Zero(t, logs.FilterLevelExact(zapcore.WarnLevel).Len(), "no warnings for a wrong password")
	// Reported once: the later failures change nothing.
	n := 0
	for _, st := range rep.snapshot() {
		if st.AuthFailed {
			n++
		}
	}
	assert.Equal(t, 1, n)
}

func TestESLClientAuthFailureLoggedAgainAfterSuccess(t *testing.T) {
	srv := newFakeESL(t)
	cfg := testESLConfig(srv.addr())
	core, logs := observer.New(zapcore.DebugLevel)
	_, rep, _ := runClient(t, cfg, zap.New(core))
	refuse := func() {
		conn := srv.accept(t)
		conn.send(transcript(t, "greeting"))
		conn.expectCmd(t, "auth ClueCon")
		conn.send(transcript(t, "reply-auth-invalid"), transcript(t, "disconnect-goodbye"))
		_ = conn.nc.Close()
		rep.waitFor(t, "auth failed", func(st ESLStatus) bool { return st.AuthFailed })
	}
	refuse()
	conn := srv.accept(t)
	serveAuthed(t, conn, "ClueCon")
	r := defaultReplies(t)
	go func() { _ = servePolls(conn, r, nil) }()
	rep.waitFor(t, "connected", connected)
	_ = conn.nc.Close()
	refuse()
	assert.Equal(t, 2, logs.FilterMessage("ESL authentication failed for node fs1: wrong esl_password").Len())
}

func TestESLClientRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nothing listens there now

	c, rep, _ := runClient(t, testESLConfig(addr), nil)
	st := rep.waitFor(t, "refused", func(st ESLStatus) bool { return st.Refused })
	assert.False(t, st.Connected)
	assert.False(t, st.AuthFailed)
	require.ErrorIs(t, st.Err, syscall.ECONNREFUSED)
	assert.True(t, st.Load.At.IsZero())
	assert.True(t, c.Status().Refused)
}

func TestESLClientHungNode(t *testing.T) {
	srv := newFakeESL(t)
	cfg := testESLConfig(srv.addr())
	cfg.PollInterval = 50 * time.Millisecond
	cfg.ReplyTimeout = 300 * time.Millisecond
	_, rep, _ := runClient(t, cfg, nil)

	conn := srv.accept(t)
	serveAuthed(t, conn, "ClueCon")
	// Answer the first round, then keep reading but never answer again,
	// as a SIGSTOPped FreeSWITCH does (the kernel still takes the bytes).
	rounds := 0
	r := defaultReplies(t)
	r.before = func(cmd string) bool {
		if cmd == "api fsctl pause_check" {
			rounds++
			return rounds == 1
		}
		return rounds == 0
	}
	closed := make(chan error, 1)
	go func() { closed <- servePolls(conn, r, nil) }()
	up := rep.waitFor(t, "connected", connected)
	gone := rep.waitFor(t, "down", down)
	require.ErrorIs(t, gone.Err, ErrESLTimeout)
	assert.Contains(t, gone.Err.Error(), `no reply to "api status"`)
	// The next poll goes out PollInterval after connect and is declared
	// lost ReplyTimeout later.
	took := gone.Since.Sub(up.Since)
	assert.GreaterOrEqual(t, took, cfg.ReplyTimeout)
	assert.Less(t, took, cfg.PollInterval+cfg.ReplyTimeout+time.Second)
	assert.True(t, gone.Load.At.IsZero(), "figures are cleared")
	assert.False(t, gone.Paused)
	assert.False(t, gone.ProfileKnown)

	// The hung connection is closed, and the client tries again.
	select {
	case err := <-closed:
		assert.Error(t, err, "the server should see the connection closed")
	case <-time.After(waitLimit):
		t.Fatal("the client did not close the hung connection")
	}
	srv.accept(t)
}

func TestESLClientNoGreeting(t *testing.T) {
	srv := newFakeESL(t)
	cfg := testESLConfig(srv.addr())
	cfg.ReplyTimeout = 200 * time.Millisecond
	_, rep, _ := runClient(t, cfg, nil)
	srv.accept(t) // accepts, says nothing
	st := rep.waitFor(t, "down", down)
	require.ErrorIs(t, st.Err, ErrESLTimeout)
	assert.Contains(t, st.Err.Error(), "(greeting)")
}

func TestESLClientReconnectsAfterClose(t *testing.T) {
	srv := newFakeESL(t)
	_, rep, _ := runClient(t, testESLConfig(srv.addr()), nil)

	for i := range 3 {
		conn := srv.accept(t)
		serveAuthed(t, conn, "ClueCon")
		r := defaultReplies(t)
		go func() { _ = servePolls(conn, r, nil) }()
		up := rep.waitFor(t, fmt.Sprintf("connected (%d)", i), connected)
		assert.Equal(t, int64(3), up.Load.Sessions)

		// A crash: the connection just closes, no notice.
		closedAt := time.Now()
		_ = conn.nc.Close()
		st := rep.waitFor(t, "down", down)
		require.ErrorIs(t, st.Err, ErrESLDisconnected)
		assert.False(t, st.Refused)
		assert.True(t, st.Load.At.IsZero(), "figures are cleared")
		// EOF is immediate; the bound is loose only to survive a loaded
		// test machine.
		assert.Less(t, st.Since.Sub(closedAt), time.Second)
	}
}

func TestESLClientDisconnects(t *testing.T) {
	tests := []struct {
		name string
		send string // capture
		want string
	}{
		{"shutdown notice", "disconnect-shutdown", `FreeSWITCH said "The system is being shut down."`},
		{"goodbye notice", "disconnect-goodbye", "Disconnected, goodbye."},
		{"SHUTDOWN event", "event-shutdown", "SHUTDOWN event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeESL(t)
			_, rep, _ := runClient(t, testESLConfig(srv.addr()), nil)
			conn := srv.accept(t)
			serveAuthed(t, conn, "ClueCon")
			closed := make(chan error, 1)
			r := defaultReplies(t)
			go func() { closed <- servePolls(conn, r, nil) }()
			rep.waitFor(t, "connected", connected)

			// The server keeps the connection open: the notice alone must
			// end it.
			conn.send(transcript(t, tt.send))
			st := rep.waitFor(t, "down", down)
			require.ErrorIs(t, st.Err, ErrESLDisconnected)
			assert.Contains(t, st.Err.Error(), tt.want)
			select {
			case <-closed:
			case <-time.After(waitLimit):
				t.Fatal("the client kept the connection open")
			}
			srv.accept(t) // and comes back
		})
	}
}

func TestESLClientPausedAndNotReady(t *testing.T) {
	srv := newFakeESL(t)
	_, rep, _ := runClient(t, testESLConfig(srv.addr()), nil)
	conn := srv.accept(t)
	serveAuthed(t, conn, "ClueCon")
	// fsctl shutdown asap, capture G: pause_check true; status then says
	// "is not ready".
	notReady := strings.Replace(string(readOne(t, transcript(t, "api-status-load")).body), ") is ready", ") is not ready", 1)
	r := fsReplies{status: apiResponse(notReady), pause: transcript(t, "api-true"), sofia: transcript(t, "api-sofia-status")}
	go func() { _ = servePolls(conn, r, nil) }()
	st := rep.waitFor(t, "connected", connected)
	assert.True(t, st.Paused)
	assert.False(t, st.Ready)
	assert.Equal(t, int64(3), st.Load.Sessions)
}

// TestESLClientEventsBetweenReplies slips events in before, between and
// after the replies to pipelined commands: each reply must still be matched
// to its command.
func TestESLClientEventsBetweenReplies(t *testing.T) {
	srv := newFakeESL(t)
	cfg := testESLConfig(srv.addr())
	cfg.ProfileCheckEvery = 0 // never: the round is status + pause_check
	_, rep, _ := runClient(t, cfg, nil)
	conn := srv.accept(t)
	serveAuthed(t, conn, "ClueCon")
	conn.expectCmd(t, "api status")
	conn.expectCmd(t, "api fsctl pause_check")
	conn.send(
		transcript(t, "event-heartbeat-plain-idle"), // Session-Count 0, Max-Sessions 1000, Idle-CPU 62.8
		transcript(t, "api-status-load"),            // 3 sessions, max 1000, idle 2.27
		transcript(t, "event-shutdown-requested-elegant"),
		transcript(t, "event-heartbeat-plain-load"), // Session-Count 3, Max-Sessions 3, Idle-CPU 2.533333
		transcript(t, "event-background-job"),       // an event with a body of its own
		transcript(t, "api-true"),                   // pause_check
	)
	st := rep.waitFor(t, "connected", connected)
	assert.True(t, st.Paused, "the pause_check reply went to pause_check")
	assert.True(t, st.Ready, "the status reply went to status")
	assert.Equal(t, int64(3), st.Load.MaxSessions, "the later heartbeat wins")
	assert.InDelta(t, 2.533333, st.Load.IdleCPU, 1e-9)
	assert.False(t, st.LastHeartbeat.IsZero())
	assert.False(t, st.ProfileKnown)
}

func TestESLClientChannelEventsMoveSessions(t *testing.T) {
	srv := newFakeESL(t)
	_, rep, _ := runClient(t, testESLConfig(srv.addr()), nil) // one poll round only
	conn := srv.accept(t)
	serveAuthed(t, conn, "ClueCon")
	r := fsReplies{status: transcript(t, "api-status-idle"), pause: transcript(t, "api-false"), sofia: transcript(t, "api-sofia-status")}
	go func() { _ = servePolls(conn, r, nil) }()
	up := rep.waitFor(t, "connected", connected)
	require.Equal(t, int64(0), up.Load.Sessions)

	create, hangup := synthetic(t, "event-channel-create"), synthetic(t, "event-channel-hangup-complete")
	sessions := func(n int64) func(ESLStatus) bool {
		return func(st ESLStatus) bool { return st.Load.Sessions == n }
	}
	conn.send(create, create, create)
	st := rep.waitFor(t, "3 sessions", sessions(3))
	assert.Equal(t, up.Load.At, st.Load.At, "events move Sessions, not At")
	assert.Equal(t, up.Load.MaxSessions, st.Load.MaxSessions)

	conn.send(hangup)
	rep.waitFor(t, "2 sessions", sessions(2))
	conn.send(hangup, hangup, hangup, hangup, hangup, create)
	// Never below zero: 2 - 5 = 0, then one more call.
	rep.waitFor(t, "1 session", sessions(1))
	for _, st := range rep.snapshot() {
		assert.GreaterOrEqual(t, st.Load.Sessions, int64(0))
	}
}

func TestESLClientProtocolErrors(t *testing.T) {
	tests := []struct {
		name  string
		bytes string
		want  error
	}{
		{"not an event socket", "HTTP/1.1 400 Bad Request\r\n\r\n", ErrESLProtocol},
		{"no content type", "Reply-Text: hello\n\n", ErrESLProtocol},
		{"reply before greeting", "Content-Type: command/reply\nReply-Text: +OK accepted\n\n", ErrESLProtocol},
		{"acl rejection", "Content-Type: text/rude-rejection\nContent-Length: 24\n\nAccess Denied, go away.\n", ErrESLDisconnected},
		{"oversized body", "Content-Type: api/response\nContent-Length: 999999999\n\n", ErrESLProtocol},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newFakeESL(t)
			_, rep, _ := runClient(t, testESLConfig(srv.addr()), nil)
			conn := srv.accept(t)
			conn.send([]byte(tt.bytes))
			st := rep.waitFor(t, "down", down)
			require.ErrorIs(t, st.Err, tt.want)
		})
	}
}

func TestESLClientUnexpectedAuthReply(t *testing.T) {
	srv := newFakeESL(t)
	_, rep, _ := runClient(t, testESLConfig(srv.addr()), nil)
	conn := srv.accept(t)
	conn.send(transcript(t, "greeting"))
	conn.expectCmd(t, "auth ClueCon")
	conn.send(transcript(t, "reply-command-not-found"))
	st := rep.waitFor(t, "down", down)
	require.ErrorIs(t, st.Err, ErrESLProtocol)
	assert.False(t, st.AuthFailed, "only -ERR invalid is a wrong password")
}

func TestESLClientSubscriptionRefused(t *testing.T) {
	srv := newFakeESL(t)
	_, rep, _ := runClient(t, testESLConfig(srv.addr()), nil)
	conn := srv.accept(t)
	conn.send(transcript(t, "greeting"))
	conn.expectCmd(t, "auth ClueCon")
	conn.send(transcript(t, "reply-auth-accepted"))
	conn.expectCmd(t, eslSubscription)
	conn.send(transcript(t, "reply-no-keywords"))
	st := rep.waitFor(t, "down", down)
	require.ErrorIs(t, st.Err, ErrESLProtocol)
	assert.Contains(t, st.Err.Error(), "-ERR no keywords supplied")
}

func TestESLClientUnparsableRepliesKeepConnection(t *testing.T) {
	srv := newFakeESL(t)
	_, rep, _ := runClient(t, testESLConfig(srv.addr()), nil)
	conn := srv.accept(t)
	serveAuthed(t, conn, "ClueCon")
	r := fsReplies{
		status: apiResponse("-ERR status Command not found!\n"),
		pause:  transcript(t, "api-nosuchcmd"),
		sofia:  apiResponse("-ERR sofia Command not found!\n"),
	}
	go func() { _ = servePolls(conn, r, nil) }()
	// It answers, so it is connected; but no figures are claimed.
	st := rep.waitFor(t, "connected", connected)
	assert.True(t, st.Load.At.IsZero())
	assert.False(t, st.Paused)
	assert.False(t, st.ProfileKnown)
}

func TestESLClientStopsOnCancel(t *testing.T) {
	srv := newFakeESL(t)
	c, rep, stop := runClient(t, testESLConfig(srv.addr()), nil)
	conn := srv.accept(t)
	serveAuthed(t, conn, "ClueCon")
	served := make(chan error, 1)
	r := defaultReplies(t)
	go func() { served <- servePolls(conn, r, nil) }()
	rep.waitFor(t, "connected", connected)

	stop() // returns once Run has returned
	select {
	case err := <-served:
		assert.NoError(t, err, "the client says exit before it closes")
	case <-time.After(waitLimit):
		t.Fatal("the connection was left open")
	}
	st := c.Status()
	assert.False(t, st.Connected)
	assert.ErrorIs(t, st.Err, errESLStopped)
}

func TestESLClientStopsWhileRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	_, rep, stop := runClient(t, testESLConfig(addr), nil)
	rep.waitFor(t, "refused", func(st ESLStatus) bool { return st.Refused })
	stop()
}

func TestESLClientBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  func(*ESLConfig)
		want string
	}{
		{"password with newline", func(c *ESLConfig) { c.Password = "a\nb" }, "line break"},
		{"bad source address", func(c *ESLConfig) { c.SourceAddr = "not-an-ip" }, "source address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testESLConfig("127.0.0.1:1")
			tt.cfg(&cfg)
			_, rep, _ := runClient(t, cfg, nil)
			st := rep.waitFor(t, "down", down)
			assert.Contains(t, st.Err.Error(), tt.want)
		})
	}
}

func TestESLClientSourceAddr(t *testing.T) {
	srv := newFakeESL(t)
	cfg := testESLConfig(srv.addr())
	cfg.SourceAddr = "127.0.0.1"
	_, rep, _ := runClient(t, cfg, nil)
	conn := srv.accept(t)
	host, _, err := net.SplitHostPort(conn.nc.RemoteAddr().String())
	require.NoError(t, err)
	assert.Equal(t, "127.0.0.1", host)
	serveAuthed(t, conn, "ClueCon")
	r := defaultReplies(t)
	go func() { _ = servePolls(conn, r, nil) }()
	rep.waitFor(t, "connected", connected)
}

func TestESLClientInitialStatus(t *testing.T) {
	c := NewESLClient(ESLConfig{NodeID: "fs1", Addr: "127.0.0.1:1"}, nil, nil)
	st := c.Status()
	assert.False(t, st.Connected)
	require.ErrorIs(t, st.Err, errESLNotYet)
	assert.False(t, st.Since.IsZero())
	assert.True(t, st.Load.At.IsZero())
}

func TestESLConfigDefaults(t *testing.T) {
	got := ESLConfig{NodeID: "n", Addr: "a:1"}.withDefaults()
	assert.Equal(t, ESLConfig{
		NodeID: "n", Addr: "a:1", Password: "ClueCon", DialTimeout: time.Second, PollInterval: time.Second,
		ReplyTimeout: 2 * time.Second, BackoffMin: 200 * time.Millisecond,
		BackoffMax: 5 * time.Second, AuthBackoff: 30 * time.Second,
	}, got, "ProfileCheckEvery stays 0: never")
	assert.Equal(t, time.Second, ESLConfig{BackoffMin: time.Second, BackoffMax: time.Millisecond}.withDefaults().BackoffMax,
		"max is raised to min")
}

func TestESLBackoff(t *testing.T) {
	c := NewESLClient(ESLConfig{BackoffMin: 100 * time.Millisecond, BackoffMax: 2 * time.Second}, nil, nil)
	for n, ceiling := range []time.Duration{100, 200, 400, 800, 1600, 2000, 2000} {
		ceiling *= time.Millisecond
		var top time.Duration
		for range 2000 {
			d := c.backoff(n)
			require.GreaterOrEqual(t, d, time.Duration(0))
			require.LessOrEqual(t, d, ceiling, "attempt %d", n)
			top = max(top, d)
		}
		assert.Greater(t, top, ceiling/2, "attempt %d: full jitter spreads over the whole range", n)
	}
	assert.LessOrEqual(t, c.backoff(1000), 2*time.Second, "no overflow")
}

func TestESLVersion(t *testing.T) {
	assert.Equal(t, "1.11.0-release", eslVersion("1.11.0-release~64bit"))
	assert.Equal(t, "1.10.3-release+git", eslVersion("1.10.3-release+git~20200909T121624Z~e52b1a8~64bit"))
	assert.Empty(t, eslVersion(""))
}
