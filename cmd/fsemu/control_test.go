package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

func init() {
	// run must not change sipgo's process-wide settings under the feet of
	// the goroutines of emulators the tests run side by side.
	configureSipgo = func(*slog.Logger) {}
}

func TestControlAPI(t *testing.T) {
	n, err := fsemu.Start(t.Context(), fsemu.Config{ID: "fs9"})
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	srv := httptest.NewServer(newControlHandler(n))
	t.Cleanup(srv.Close)

	do := func(method, path string, want int) []byte {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		require.NoError(t, err)
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		require.Equal(t, want, res.StatusCode, "%s %s: %s", method, path, body)
		return body
	}

	var st state
	require.NoError(t, json.Unmarshal(do("POST", "/pause", 200), &st))
	assert.True(t, st.Paused)
	assert.True(t, n.Paused())
	require.NoError(t, json.Unmarshal(do("POST", "/resume", 200), &st))
	assert.False(t, n.Paused())

	require.NoError(t, json.Unmarshal(do("POST", "/faults?fail503=0.1&drop=0.05", 200), &st))
	assert.Equal(t, 0.1, st.Fail503)
	assert.Equal(t, 0.05, st.Drop)
	do("POST", "/faults?drop=0.2", 200)
	f, d := n.Faults()
	assert.Equal(t, 0.1, f, "an omitted ratio is kept")
	assert.Equal(t, 0.2, d)
	do("POST", "/faults?fail503=2", 400)
	do("POST", "/faults?drop=x", 400)

	do("POST", "/max-sessions?n=7", 200)
	assert.Equal(t, 7, n.MaxSessions())
	do("POST", "/max-sessions?n=-1", 400)
	do("POST", "/answer-delay?d=1500ms", 200)
	assert.Equal(t, 1500*time.Millisecond, n.AnswerDelay())

	var stats fsemu.Stats
	require.NoError(t, json.Unmarshal(do("GET", "/stats", 200), &stats))
	assert.Equal(t, fsemu.Stats{}, stats)
	var calls []fsemu.CallRecord
	require.NoError(t, json.Unmarshal(do("GET", "/calls?limit=5", 200), &calls))
	assert.Empty(t, calls)
	require.NoError(t, json.Unmarshal(do("GET", "/state", 200), &st))
	assert.Equal(t, "fs9", st.ID)
	assert.Equal(t, n.Addr(), st.SIP)

	do("GET", "/pause", 405)
	assert.Empty(t, st.ESL, "no Event Socket")
}

func TestControlAPIEventSocket(t *testing.T) {
	n, err := fsemu.Start(t.Context(), fsemu.Config{ID: "fs9", ESLAddr: "127.0.0.1:0"})
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	srv := httptest.NewServer(newControlHandler(n))
	t.Cleanup(srv.Close)
	do := func(method, path string, want int) state {
		t.Helper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		require.NoError(t, err)
		res, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		body, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		require.Equal(t, want, res.StatusCode, "%s %s: %s", method, path, body)
		var st state
		if want == 200 {
			require.NoError(t, json.Unmarshal(body, &st))
		}
		return st
	}

	st := do("GET", "/state", 200)
	assert.Equal(t, n.ESLAddr(), st.ESL)
	assert.NotEmpty(t, st.ESL)
	assert.True(t, st.ProfileRunning)
	assert.Equal(t, 95.0, st.IdleCPU)

	st = do("POST", "/idle-cpu?v=12.5", 200)
	assert.Equal(t, 12.5, st.IdleCPU)
	assert.Equal(t, 12.5, n.IdleCPU())
	do("POST", "/idle-cpu?v=0", 200)
	assert.Equal(t, 0.0, n.IdleCPU())
	do("POST", "/idle-cpu?v=101", 400)
	do("POST", "/idle-cpu", 400)

	st = do("POST", "/profile?running=false", 200)
	assert.False(t, st.ProfileRunning)
	assert.False(t, n.ProfileRunning())
	do("POST", "/profile?running=true", 200)
	assert.True(t, n.ProfileRunning())
	do("POST", "/profile?running=maybe", 400)

	assert.True(t, do("GET", "/state", 200).Echo, "echo on by default")
	st = do("POST", "/echo?enabled=false", 200)
	assert.False(t, st.Echo)
	assert.False(t, n.EchoEnabled())
	do("POST", "/echo?enabled=true", 200)
	assert.True(t, n.EchoEnabled())
	do("POST", "/echo?enabled=sometimes", 400)
}

func TestRunEchoFlag(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	var stderr strings.Builder
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-echo=false", "-echo-user", "9196", "-rtp", "-control", "127.0.0.1:0", "-log-level", "warn"}, pw, &stderr)
		pw.Close()
	}()
	out := bufio.NewScanner(pr)
	require.True(t, out.Scan(), "address line")
	cancel()
	require.True(t, out.Scan(), "stats line")
	require.Equal(t, 0, <-done, stderr.String())
}

func TestRunPrintsAddressAndFinalStats(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	var stderr strings.Builder
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-id", "t1", "-listen", "127.0.0.1:0", "-log-level", "warn"}, pw, &stderr)
		pw.Close()
	}()
	out := bufio.NewScanner(pr)
	require.True(t, out.Scan(), "address line")
	addr := out.Text()
	assert.Regexp(t, `^127\.0\.0\.1:\d+$`, addr)

	cancel()
	require.True(t, out.Scan(), "stats line")
	var st fsemu.Stats
	require.NoError(t, json.Unmarshal(out.Bytes(), &st), out.Text())
	assert.Equal(t, fsemu.Stats{}, st)
	select {
	case code := <-done:
		assert.Equal(t, 0, code, stderr.String())
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	var stdout, stderr strings.Builder
	assert.Equal(t, 2, run(t.Context(), []string{"-log-level", "loud"}, &stdout, &stderr))
	assert.Equal(t, 1, run(t.Context(), []string{"-listen", "127.0.0.1:0", "-fail503", "3"}, &stdout, &stderr))
	assert.Contains(t, stderr.String(), "Fail503Ratio")
	assert.Equal(t, 2, run(t.Context(), []string{"-idle-cpu", "150"}, &stdout, &stderr))
	assert.Equal(t, 1, run(t.Context(), []string{"-listen", "127.0.0.1:0", "-esl", "127.0.0.1:0", "-heartbeat", "-1s"}, &stdout, &stderr))
	assert.Contains(t, stderr.String(), "HeartbeatInterval")
}

// TestRunServesEventSocket starts the command with -esl and logs in with
// the configured password; the heartbeat and idle CPU flags reach it.
func TestRunServesEventSocket(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	stderrR, stderrW := io.Pipe()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"-listen", "127.0.0.1:0", "-esl", "127.0.0.1:0", "-esl-password", "pw",
			"-heartbeat", "50ms", "-idle-cpu", "0", "-log-level", "info"}, pw, stderrW)
		pw.Close()
		stderrW.Close()
	}()
	go func() { _, _ = io.Copy(io.Discard, pr) }()

	// The ESL address is in the log.
	addrs := make(chan string, 1)
	go func() {
		logs := bufio.NewScanner(stderrR)
		for logs.Scan() {
			if _, rest, ok := strings.Cut(logs.Text(), "esl listening"); ok {
				_, addr, _ := strings.Cut(rest, "addr=")
				addrs <- addr
			}
		}
	}()
	var eslAddr string
	select {
	case eslAddr = <-addrs:
	case <-time.After(10 * time.Second):
		t.Fatal("no esl listening log")
	}

	conn, err := net.DialTimeout("tcp", eslAddr, 10*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = conn.Write([]byte("auth pw\n\nevent plain HEARTBEAT\n\n"))
	require.NoError(t, err)
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		require.NoError(t, err)
		if line == "Idle-CPU: 0.000000\n" {
			break
		}
	}
	cancel()
	select {
	case code := <-done:
		assert.Equal(t, 0, code)
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return")
	}
}
