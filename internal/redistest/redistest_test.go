package redistest_test

import (
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/internal/redistest"
)

func TestStartStopRestart(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	require.Equal(t, "PONG", s.MustDo("PING"))
	require.Equal(t, "OK", s.MustDo("SET", "k", "v"))
	cfg := s.MustDo("CONFIG", "GET", "save").([]any)
	assert.Equal(t, "", cfg[1], "persistence must be off")

	addr := s.Addr()
	s.Stop()
	assert.False(t, s.Running())
	_, err := s.Do("PING")
	require.Error(t, err, "a stopped server must not answer")
	s.Stop() // idempotent

	s.Restart()
	assert.Equal(t, addr, s.Addr(), "Restart keeps the port")
	assert.Nil(t, s.MustDo("GET", "k"), "nothing survives a restart")
}

func TestPauseResume(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t)
	s.Pause()
	conn, err := net.DialTimeout("tcp", s.Addr(), time.Second)
	require.NoError(t, err, "a paused server still accepts connections")
	require.NoError(t, conn.SetDeadline(time.Now().Add(200*time.Millisecond)))
	_, err = conn.Write([]byte("PING\r\n"))
	require.NoError(t, err)
	_, err = conn.Read(make([]byte, 16))
	require.Error(t, err, "a paused server must not answer")
	require.NoError(t, conn.Close())
	s.Resume()
	require.Equal(t, "PONG", s.MustDo("PING"))
}

func TestPassword(t *testing.T) {
	t.Parallel()
	s := redistest.Start(t, redistest.WithPassword("s3cret"), redistest.WithConfig("maxmemory 16mb"))
	require.Equal(t, "PONG", s.MustDo("PING"))
	cfg := s.MustDo("CONFIG", "GET", "maxmemory").([]any)
	assert.Equal(t, "16777216", cfg[1])
}

func TestCluster(t *testing.T) {
	t.Parallel()
	c := redistest.StartCluster(t, 3)
	require.Len(t, c.Addrs(), 3)
	for _, n := range c.Nodes() {
		info := n.MustDo("CLUSTER", "INFO").(string)
		assert.Contains(t, info, "cluster_state:ok")
	}
}

func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	s := redistest.StartSentinelSet(t, 1)
	require.Len(t, s.SentinelAddrs(), 3)
	old := s.Master()
	require.Equal(t, s.Servers()[0], old)
	s.KillMaster()
	promoted := s.WaitFailover(old)
	assert.NotEqual(t, old.Addr(), promoted.Addr())
	assert.Equal(t, promoted, s.Master())
	require.Equal(t, "OK", promoted.MustDo("SET", "after", "failover"))
}

// fatalRecorder is a testing.TB whose Fatalf records the message and ends
// the goroutine, as the real one does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestMissingServerFails: without redis-server the test fails, naming the
// install command; it is never skipped.
func TestMissingServerFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	rec := &fatalRecorder{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		redistest.Start(rec)
	}()
	<-done
	assert.Contains(t, rec.msg, "redis-server is not installed")
	assert.Contains(t, rec.msg, redistest.InstallHint)
	assert.Equal(t, "apt-get install -y redis-server", redistest.InstallHint)
}
