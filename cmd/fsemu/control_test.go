package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

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
}
