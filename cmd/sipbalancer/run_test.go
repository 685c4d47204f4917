package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

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
