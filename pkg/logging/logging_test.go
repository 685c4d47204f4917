package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNewRejectsBadSettings(t *testing.T) {
	_, _, err := New("loud", "json", true, &bytes.Buffer{})
	require.ErrorContains(t, err, "log.level")
	_, _, err = New("info", "xml", true, &bytes.Buffer{})
	require.ErrorContains(t, err, "log.format")
}

func TestSlogBridge(t *testing.T) {
	var buf bytes.Buffer
	log, _, err := New("debug", "json", true, &buf)
	require.NoError(t, err)
	s := Slog(log)

	s.Info("chatty")    // below Warn: dropped
	s.Debug("chattier") // dropped
	packet := "INVITE sip:x SIP/2.0\r\n" + strings.Repeat("X-Junk: y\r\n", 50)
	s.Error("failed to parse", "data", packet, "error", "bad")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 1, buf.String())
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(lines[0]), &m))
	require.Equal(t, "failed to parse", m["msg"])
	require.Equal(t, "sipgo", m["logger"])
	require.Equal(t, "bad", m["error"])
	// The raw packet (attacker-controlled, possibly huge) is not logged.
	require.NotContains(t, buf.String(), "X-Junk")
	require.EqualValues(t, len(packet), m["data_bytes"])
}

func TestSamplingBoundsAFlood(t *testing.T) {
	var buf bytes.Buffer
	log, _, err := New("info", "json", true, &buf)
	require.NoError(t, err)
	s := Slog(log)
	for i := 0; i < 10000; i++ {
		s.Error("failed to parse", "error", "bad")
	}
	n := strings.Count(buf.String(), "\n")
	// 100 first per second, then 1 in 100: far fewer than 10000 lines.
	require.Less(t, n, 400)
	require.GreaterOrEqual(t, n, 100)
}

func TestLevelChangesAtRunTime(t *testing.T) {
	var buf bytes.Buffer
	log, lvl, err := New("warn", "console", true, &buf)
	require.NoError(t, err)
	log.Info("hidden")
	lvl.SetLevel(-1) // debug
	log.Debug("shown")
	require.NotContains(t, buf.String(), "hidden")
	require.Contains(t, buf.String(), "shown")
}

func TestSamplingOff(t *testing.T) {
	var buf bytes.Buffer
	log, _, err := New("info", "json", false, &buf)
	require.NoError(t, err)
	for i := 0; i < 500; i++ {
		log.Info("same")
	}
	require.Equal(t, 500, strings.Count(buf.String(), "\n"))
}
