package health

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

// TestESLClientAgainstFsemu runs the client against the emulator's Event
// Socket server. The primary tests replay real FreeSWITCH bytes (see
// esl_test.go); this one checks that the two ends of the project agree.
func TestESLClientAgainstFsemu(t *testing.T) {
	node, err := fsemu.Start(t.Context(), fsemu.Config{
		ID:                "fs1",
		ESLAddr:           "127.0.0.1:0",
		HeartbeatInterval: 50 * time.Millisecond,
		MaxSessions:       10,
		IdleCPU:           80,
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = node.Close() })

	cfg := testESLConfig(node.ESLAddr())
	cfg.PollInterval = 20 * time.Millisecond
	cfg.ProfileCheckEvery = 20 * time.Millisecond
	_, rep, _ := runClient(t, cfg, nil)

	st := rep.waitFor(t, "connected", connected)
	assert.Equal(t, int64(10), st.Load.MaxSessions)
	assert.Equal(t, int64(0), st.Load.Sessions)
	assert.InDelta(t, 80, st.Load.IdleCPU, 0.01)
	assert.True(t, st.Ready)
	assert.False(t, st.Paused)
	wantVersion, _, _ := strings.Cut(fsemu.DefaultVersion, "~")
	assert.Equal(t, wantVersion, st.Version)

	st = rep.waitFor(t, "a heartbeat", func(st ESLStatus) bool { return !st.LastHeartbeat.IsZero() })
	assert.Equal(t, int64(10), st.Load.MaxSessions)
	assert.Equal(t, wantVersion, st.Version)
	rep.waitFor(t, "profiles known", func(st ESLStatus) bool { return st.ProfileKnown && st.ProfilesRunning })

	node.Pause()
	rep.waitFor(t, "paused", func(st ESLStatus) bool { return st.Paused && !st.Ready })
	node.Resume()
	rep.waitFor(t, "resumed", func(st ESLStatus) bool { return !st.Paused && st.Ready })

	node.SetProfileRunning(false)
	rep.waitFor(t, "profile down", func(st ESLStatus) bool { return st.ProfileKnown && !st.ProfilesRunning })
	node.SetProfileRunning(true)
	rep.waitFor(t, "profile up", func(st ESLStatus) bool { return st.ProfilesRunning })

	// Stopping the node: SHUTDOWN event / notice, then nothing listens.
	require.NoError(t, node.Close())
	gone := rep.waitFor(t, "down", down)
	require.ErrorIs(t, gone.Err, ErrESLDisconnected)
	rep.waitFor(t, "refused", func(st ESLStatus) bool { return st.Refused })
}
