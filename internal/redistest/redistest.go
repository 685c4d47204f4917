// Package redistest starts real redis-server processes for tests: a
// standalone server (Start), a Sentinel-managed master with replicas
// (StartSentinelSet) and a Redis Cluster (StartCluster). Each server listens
// on a free loopback port, lives in its own temporary directory, persists
// nothing (save "", appendonly no) and is killed when the test ends.
//
// Every test package that needs Redis starts its own servers: there is no
// shared server across packages, and nothing here reads an address from the
// environment. Tests therefore run anywhere redis-server is installed, in
// parallel with each other, and can stop, restart or freeze (SIGSTOP) their
// servers without disturbing anyone else.
//
// A missing redis-server fails the test with the command that installs it;
// it is never a reason to skip, because a skipped test proves nothing.
package redistest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// InstallHint is the command that installs redis-server (and redis-cli) on
// the Debian and Ubuntu machines the project is tested on.
const InstallHint = "apt-get install -y redis-server"

// Timeouts of the helper itself. They bound every wait, so a broken server
// fails the test instead of hanging it.
const (
	// readyTimeout bounds the wait for a started server to answer PING.
	readyTimeout = 10 * time.Second
	// pollEvery is the period of every wait loop.
	pollEvery = 10 * time.Millisecond
	// ioTimeout bounds one command sent by the helper.
	ioTimeout = 2 * time.Second
)

// Option changes how Start configures a server.
type Option func(*config)

type config struct {
	lines    []string
	password string
	sentinel bool
	busPort  bool // the cluster bus port (port+10000) must be free too
	port     int  // a fixed port chosen by the caller; 0: pick a free one
}

// WithConfig appends redis.conf directives, one per argument, for example
// WithConfig("maxmemory 10mb", "maxmemory-policy noeviction").
func WithConfig(lines ...string) Option {
	return func(c *config) { c.lines = append(c.lines, lines...) }
}

// WithPassword makes the server require password (requirepass); the helper
// authenticates its own commands with it.
func WithPassword(password string) Option {
	return func(c *config) {
		c.password = password
		c.lines = append(c.lines, "requirepass "+quote(password))
	}
}

// Server is one redis-server (or redis-sentinel) process on loopback. Its
// methods fail the test that started it on error; they are safe to call from
// that test's goroutines, not after it has ended.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	port int
	cfg  config

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when cmd has been waited for
	paused bool
}

// Start starts a redis-server on a free loopback port and waits until it
// answers PING. The server is killed when the test ends.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	var c config
	for _, o := range opts {
		o(&c)
	}
	return start(t, c)
}

func start(t testing.TB, c config) *Server {
	t.Helper()
	bin := serverBinary(t)
	dir := t.TempDir()
	var lastErr error
	// A free port can be taken by another process between the probe and
	// redis-server's bind; a few attempts make that race irrelevant.
	for range 5 {
		port, err := c.port, error(nil)
		if port == 0 {
			port, err = freePort(c.busPort)
		}
		if err != nil {
			lastErr = err
			continue
		}
		s := &Server{t: t, bin: bin, dir: dir, port: port, cfg: c}
		if lastErr = s.launch(); lastErr == nil {
			t.Cleanup(s.kill)
			return s
		}
	}
	t.Fatalf("redistest: cannot start redis-server: %v", lastErr)
	return nil
}

// serverBinary returns the path of redis-server or fails the test with the
// install command.
func serverBinary(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server is not installed (%v); install it with: %s", err, InstallHint)
	}
	return bin
}

// Addr returns the server's address, 127.0.0.1:port.
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Port returns the server's port; it stays the same across Restart.
func (s *Server) Port() int { return s.port }

// Dir returns the server's own temporary directory (config and log).
func (s *Server) Dir() string { return s.dir }

// Stop kills the server with SIGKILL, as a crash would, and waits for the
// process to be gone. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.t.Helper()
	s.kill()
}

// Restart starts the server again on the same port, with the same
// configuration, and waits until it answers PING. Data does not survive
// (nothing is persisted). A running server is stopped first.
func (s *Server) Restart() {
	s.t.Helper()
	s.kill()
	if err := s.launch(); err != nil {
		s.t.Fatalf("redistest: restart %s: %v", s.Addr(), err)
	}
}

// Pause freezes the server with SIGSTOP: connections stay open and
// connects still succeed (the kernel accepts them), but nothing is answered —
// a hung server, not a dead one. Resume undoes it.
func (s *Server) Pause() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP, true)
}

// Resume lets a paused server run again (SIGCONT).
func (s *Server) Resume() {
	s.t.Helper()
	s.signal(syscall.SIGCONT, false)
}

// Running reports whether the server process is alive (paused or not).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.runningLocked()
}

func (s *Server) runningLocked() bool {
	if s.cmd == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

func (s *Server) signal(sig syscall.Signal, paused bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.runningLocked() {
		s.t.Fatalf("redistest: %s: signal %v to a server that is not running", s.Addr(), sig)
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("redistest: %s: signal %v: %v", s.Addr(), sig, err)
	}
	s.paused = paused
}

// Do sends one command on a fresh connection and returns the reply: a
// string (simple or bulk), an int64, nil, or a []any of those. An error
// reply is returned as an error.
func (s *Server) Do(args ...string) (any, error) {
	return do(s.Addr(), s.cfg.password, args...)
}

// MustDo is Do that fails the test on error.
func (s *Server) MustDo(args ...string) any {
	s.t.Helper()
	v, err := s.Do(args...)
	if err != nil {
		s.t.Fatalf("redistest: %s: %s: %v", s.Addr(), strings.Join(args, " "), err)
	}
	return v
}

// Info returns the fields of INFO section (for example "replication").
func (s *Server) Info(section string) (map[string]string, error) {
	v, err := s.Do("INFO", section)
	if err != nil {
		return nil, err
	}
	text, ok := v.(string)
	if !ok {
		return nil, fmt.Errorf("INFO %s: unexpected reply %T", section, v)
	}
	return parseInfo(text), nil
}

// parseInfo turns the "key:value" lines of an INFO or CLUSTER INFO reply into
// a map.
func parseInfo(text string) map[string]string {
	out := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = v
		}
	}
	return out
}

// launch writes the config, starts the process and waits until it answers
// PING. On failure the process is gone and the error carries the log tail.
func (s *Server) launch() error {
	conf := filepath.Join(s.dir, "redis.conf")
	if err := os.WriteFile(conf, []byte(s.configText()), 0o600); err != nil {
		return err
	}
	args := []string{conf}
	if s.cfg.sentinel {
		args = append(args, "--sentinel")
	}
	cmd := exec.Command(s.bin, args...)
	cmd.Dir = s.dir
	cmd.SysProcAttr = sysProcAttr()
	logf, err := os.OpenFile(filepath.Join(s.dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return err
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(exited)
	}()
	s.mu.Lock()
	s.cmd, s.exited, s.paused = cmd, exited, false
	s.mu.Unlock()

	deadline := time.Now().Add(readyTimeout)
	for {
		v, err := s.Do("PING")
		if err == nil && v == "PONG" {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("redis-server on port %d exited at start; log:\n%s", s.port, s.logTail())
		default:
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server on port %d did not answer PING within %s (last: %v, %v); log:\n%s",
				s.port, readyTimeout, v, err, s.logTail())
		}
		time.Sleep(pollEvery)
	}
}

func (s *Server) configText() string {
	var b strings.Builder
	fmt.Fprintf(&b, "port %d\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\n", s.port)
	fmt.Fprintf(&b, "dir %s\nlogfile %s\n", quote(s.dir), quote(filepath.Join(s.dir, "redis.log")))
	if !s.cfg.sentinel {
		b.WriteString("save \"\"\nappendonly no\n")
	}
	for _, l := range s.cfg.lines {
		b.WriteString(l)
		b.WriteByte('\n')
	}
	return b.String()
}

// kill sends SIGKILL (which also ends a stopped process) and waits for the
// process to be reaped.
func (s *Server) kill() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-exited
}

// logTail returns the end of the server's log files, for failure messages.
func (s *Server) logTail() string {
	var out bytes.Buffer
	for _, name := range []string{"redis.log", "stdout.log"} {
		b, err := os.ReadFile(filepath.Join(s.dir, name))
		if err != nil || len(b) == 0 {
			continue
		}
		if len(b) > 2048 {
			b = b[len(b)-2048:]
		}
		fmt.Fprintf(&out, "--- %s ---\n%s\n", name, b)
	}
	return out.String()
}

// freePort returns a loopback TCP port that is free now; with bus set, port
// + 10000 (the Redis Cluster bus port) is free as well.
func freePort(bus bool) (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		if !bus {
			_ = l.Close()
			return port, nil
		}
		if port+10000 > 65535 {
			_ = l.Close()
			continue
		}
		l2, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000)))
		_ = l.Close()
		if err != nil {
			continue
		}
		_ = l2.Close()
		return port, nil
	}
	return 0, errors.New("no free port pair for a cluster node")
}

// quote makes s one redis.conf argument.
func quote(s string) string {
	return strconv.Quote(s)
}

// waitUntil polls cond until it returns nil or timeout passes, and returns
// the last error.
func waitUntil(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(pollEvery)
	}
}
