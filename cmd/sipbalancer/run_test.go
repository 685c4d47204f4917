package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func init() {
	// run must not replace sipgo's process-wide logger under the feet of
	// an earlier run's goroutines (a data race).
	setSipgoLogger = func(*slog.Logger) {}
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "sipbalancer.yaml")
	require.NoError(t, os.WriteFile(p, []byte(body), 0o600))
	return p
}

const validConfig = `
sip:
  listen: ["udp://127.0.0.1:0"]
nodes:
  - { id: fs1, sip: "127.0.1.1:5060" }
admin:
  listen: ""
log:
  level: warn
`

func TestRunUsage(t *testing.T) {
	var stderr bytes.Buffer
	require.Equal(t, 2, run(context.Background(), nil, &stderr))
	require.Contains(t, stderr.String(), "-config FILE is required")
}

func TestRunRejectsBadConfigNamingTheKey(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"unknown key", validConfig + "failover:\n  invite_timout: 1s\n", `failover.invite_timout`},
		{"bad value", validConfig + "failover:\n  max_attempts: 0\n", "failover.max_attempts"},
		{"bad node", strings.Replace(validConfig, `"127.0.1.1:5060"`, `"127.0.1.1"`, 1), "nodes[0].sip"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			code := run(context.Background(), []string{"-config", writeConfig(t, tc.yaml)}, &stderr)
			require.Equal(t, 1, code)
			require.Contains(t, stderr.String(), tc.want)
		})
	}
}

func TestRunCheck(t *testing.T) {
	var stderr bytes.Buffer
	require.Equal(t, 0, run(context.Background(), []string{"-config", writeConfig(t, validConfig), "-check"}, &stderr))
	require.Contains(t, stderr.String(), "is valid")
}

func TestRunStartsAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() { done <- run(ctx, []string{"-config", writeConfig(t, validConfig)}, &stderr) }()
	// Stopping (SIGTERM in main) with no call up ends at once with status 0.
	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, stderr.String())
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop")
	}
}

func TestRunFailsOnBusyPort(t *testing.T) {
	// A port in use is reported and the balancer exits 1.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	defer pc.Close()
	cfg := strings.Replace(validConfig, "127.0.0.1:0", pc.LocalAddr().String(), 1)
	var stderr bytes.Buffer
	require.Equal(t, 1, run(context.Background(), []string{"-config", writeConfig(t, cfg)}, &stderr))
	require.Contains(t, stderr.String(), "address already in use")
}

// freeTCPAddr returns a loopback address nothing listens on right now.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	return addr
}

func adminConfig(adminAddr string, nodes ...string) string {
	var b strings.Builder
	for i, n := range nodes {
		fmt.Fprintf(&b, "  - { id: fs%d, sip: %q }\n", i+1, n)
	}
	return fmt.Sprintf(`
sip:
  listen: ["udp://127.0.0.1:0"]
nodes:
%s
session:
  token_secret: run-test
admin:
  listen: %q
  token: run-test-token
log:
  level: warn
`, b.String(), adminAddr)
}

func request(t *testing.T, method, url string, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(body)
}

// TestRunServesAdminAPI: the admin API runs with the balancer, and its
// reload and SIGHUP re-read the same file through the same function.
func TestRunServesAdminAPI(t *testing.T) {
	addr := freeTCPAddr(t)
	base := "http://" + addr
	path := writeConfig(t, adminConfig(addr, "127.0.1.1:5060"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	var stderr bytes.Buffer
	go func() { done <- run(ctx, []string{"-config", path}, &stderr) }()

	// Up when /healthz answers (SIGHUP is caught from then on).
	require.Eventually(t, func() bool {
		res, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		res.Body.Close()
		return res.StatusCode == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond)

	// The API reloads the file.
	require.NoError(t, os.WriteFile(path, []byte(adminConfig(addr, "127.0.1.1:5060", "127.0.1.2:5060")), 0o600))
	code, body := request(t, http.MethodPost, base+"/api/v1/reload", "run-test-token")
	require.Equal(t, http.StatusOK, code, body)
	require.Contains(t, body, `"nodes"`)
	code, _ = request(t, http.MethodGet, base+"/api/v1/nodes/fs2", "")
	require.Equal(t, http.StatusOK, code)

	// A bad file is refused; the running configuration stays.
	require.NoError(t, os.WriteFile(path, []byte(adminConfig(addr, "127.0.1.1", "127.0.1.2")), 0o600))
	code, body = request(t, http.MethodPost, base+"/api/v1/reload", "run-test-token")
	require.Equal(t, http.StatusBadRequest, code, body)
	require.Contains(t, body, "nodes[0].sip")
	require.Contains(t, body, "nodes[1].sip")
	code, _ = request(t, http.MethodGet, base+"/api/v1/nodes/fs2", "")
	require.Equal(t, http.StatusOK, code)

	// SIGHUP does the same.
	require.NoError(t, os.WriteFile(path, []byte(adminConfig(addr, "127.0.1.1:5060", "127.0.1.2:5060", "127.0.1.3:5060")), 0o600))
	require.NoError(t, syscall.Kill(os.Getpid(), syscall.SIGHUP))
	require.Eventually(t, func() bool {
		code, _ := request(t, http.MethodGet, base+"/api/v1/nodes/fs3", "")
		return code == http.StatusOK
	}, 30*time.Second, 20*time.Millisecond, "SIGHUP reloads the file")

	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code)
	case <-time.After(30 * time.Second):
		t.Fatal("run did not stop")
	}
	_, err := http.Get(base + "/healthz")
	require.Error(t, err, "the admin API stops with the process")
}

func TestRunFailsOnBusyAdminPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	var stderr bytes.Buffer
	code := run(context.Background(), []string{"-config", writeConfig(t, adminConfig(ln.Addr().String(), "127.0.1.1:5060"))}, &stderr)
	require.Equal(t, 1, code)
	require.Contains(t, stderr.String(), "admin.listen")
	require.Contains(t, stderr.String(), "address already in use")
}

func TestAvailableMemory(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	meminfo := write("meminfo", "MemTotal:       24598812 kB\nMemFree:        1000 kB\n")
	tests := []struct {
		name            string
		cgroup, meminfo string
		want            uint64
		ok              bool
	}{
		{"cgroup limit", write("limited", "2147483648\n"), meminfo, 2 << 30, true},
		{"cgroup without limit", write("max", "max\n"), meminfo, 24598812 * 1024, true},
		{"no cgroup file", filepath.Join(dir, "absent"), meminfo, 24598812 * 1024, true},
		{"nothing readable", filepath.Join(dir, "absent"), filepath.Join(dir, "absent2"), 0, false},
		{"meminfo without MemTotal", write("max2", "max\n"), write("odd", "MemFree: 1 kB\n"), 0, false},
		{"meminfo in other units", write("max3", "max\n"), write("mb", "MemTotal: 1024 MB\n"), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := availableMemory(tt.cgroup, tt.meminfo)
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.want, got)
		})
	}
}
