package app

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/config"
	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
)

func load(t *testing.T, yaml string) *config.Config {
	t.Helper()
	c, err := config.LoadBytes([]byte(yaml))
	require.NoError(t, err)
	return c
}

const base = `
sip:
  listen: ["udp://127.0.0.1:0"]
nodes:
  - { id: fs1, sip: "127.0.1.1:5060" }
  - { id: fs2, sip: "127.0.1.2:5060", weight: 2 }
session:
  token_secret: s
admin:
  listen: ""
`

func TestReloadNodes(t *testing.T) {
	a, err := New(load(t, base), nil)
	require.NoError(t, err)
	require.NoError(t, a.Start())
	defer a.Close()
	fs1 := a.Dispatcher().Node("fs1")
	fs1.AddActive(3)

	next := load(t, `
sip:
  listen: ["udp://127.0.0.1:0"]
nodes:
  - { id: fs1, sip: "127.0.1.1:5060", weight: 5 }
  - { id: fs3, sip: "sip:127.0.1.3:5080;transport=tcp" }
dispatcher:
  policy: hash
session:
  token_secret: s
admin:
  listen: ""
`)
	applied, restart, err := a.Reload(next)
	require.NoError(t, err)
	require.Contains(t, applied, "nodes")
	require.Contains(t, applied, "dispatcher.policy")
	require.Empty(t, restart)

	snap := a.Dispatcher().Snapshot()
	ids := []string{}
	for _, n := range snap.Nodes() {
		ids = append(ids, n.ID())
	}
	require.Equal(t, []string{"fs1", "fs3"}, ids)
	require.Equal(t, 5, a.Dispatcher().Node("fs1").Spec.Weight)
	require.EqualValues(t, 3, a.Dispatcher().Node("fs1").Active(), "live counters survive a reload")
	require.Equal(t, "TCP", a.Dispatcher().Node("fs3").Spec.Transport)
	// The removed node drains: still routable for its calls, never picked.
	// Nothing listens at its address, so its health checks may already
	// have found it down (on a loaded machine the reload comes late).
	fs2 := a.Dispatcher().Node("fs2")
	require.NotNil(t, fs2)
	require.Contains(t, []dispatcher.State{dispatcher.StateDraining, dispatcher.StateDown}, fs2.State())
	for k := range uint64(1000) {
		for _, n := range a.Dispatcher().Pick(dispatcher.Key{Hash: k * 0x9e3779b97f4a7c15}, make([]*dispatcher.Node, 0, 3)) {
			require.NotEqual(t, "fs2", n.ID(), "a removed node was picked")
		}
	}
	require.Equal(t, "hash", a.Dispatcher().Policy().String())
}

func TestReloadReportsRestartKeys(t *testing.T) {
	a, err := New(load(t, base), nil)
	require.NoError(t, err)
	defer a.Close()
	next := load(t, base+"failover:\n  invite_timeout: 3s\nlog:\n  level: debug\n")
	next.SIP.Listen = []string{"udp://127.0.0.1:5999"}
	next.Admin.Listen = "127.0.0.1:9999"
	applied, restart, err := a.Reload(next)
	require.NoError(t, err)
	require.Empty(t, applied, "the node list did not change")
	// Without UseLogLevel the level cannot change at run time.
	require.ElementsMatch(t, []string{"sip.listen", "failover.invite_timeout", "admin.listen", "log.level"}, restart)
}

func TestReloadAppliesLogLevel(t *testing.T) {
	a, err := New(load(t, base), nil)
	require.NoError(t, err)
	defer a.Close()
	lvl := zap.NewAtomicLevelAt(zap.InfoLevel)
	a.UseLogLevel(lvl)
	applied, restart, err := a.Reload(load(t, base+"log:\n  level: debug\n"))
	require.NoError(t, err)
	require.Equal(t, []string{"log.level"}, applied)
	require.Empty(t, restart)
	require.Equal(t, zap.DebugLevel, lvl.Level())
	// Reloading the same file again changes nothing.
	applied, restart, err = a.Reload(load(t, base+"log:\n  level: debug\n"))
	require.NoError(t, err)
	require.Empty(t, applied)
	require.Empty(t, restart)
}

func TestReloadAppliesOverloadLatency(t *testing.T) {
	a, err := New(load(t, base), nil)
	require.NoError(t, err)
	defer a.Close()
	require.Equal(t, 50*time.Millisecond, a.Proxy().OverloadLatency(), "the default")
	applied, restart, err := a.Reload(load(t, base+"limits:\n  overload_latency: 0s\n"))
	require.NoError(t, err)
	require.Equal(t, []string{"limits.overload_latency"}, applied)
	require.Empty(t, restart)
	require.Zero(t, a.Proxy().OverloadLatency(), "shedding turned off at run time")
}

func TestReloadRejectedKeepsRunningConfig(t *testing.T) {
	a, err := New(load(t, base), nil)
	require.NoError(t, err)
	defer a.Close()
	next := load(t, base+"dispatcher:\n  policy: hash\n")
	next.Nodes = append(next.Nodes, config.Node{ID: "fs3", SIP: "no-such-host.invalid:5060", Weight: 1})
	_, _, err = a.Reload(next)
	require.ErrorContains(t, err, "nodes[2].sip")
	require.Equal(t, "least_load", a.Dispatcher().Policy().String(), "policy unchanged")
	require.Len(t, a.Dispatcher().Snapshot().Nodes(), 2, "nodes unchanged")
}

func TestChangedKeys(t *testing.T) {
	old := load(t, base)
	tests := []struct {
		name string
		edit func(c *config.Config)
		want []string
	}{
		{"nothing", func(*config.Config) {}, nil},
		{"listen", func(c *config.Config) { c.SIP.Listen = []string{"udp://127.0.0.1:1"} }, []string{"sip.listen"}},
		{"nested", func(c *config.Config) { c.Health.Options.Rise = 5 }, []string{"health.options.rise"}},
		{"node weight", func(c *config.Config) { c.Nodes[0].Weight = 9 }, []string{"nodes"}},
		{"secret", func(c *config.Config) { c.Session.TokenSecret = "other" }, []string{"session.token_secret"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cur := load(t, base)
			tc.edit(cur)
			require.Equal(t, tc.want, ChangedKeys(old, cur))
		})
	}
}

func TestNewRejectsUnresolvableNode(t *testing.T) {
	_, err := New(load(t, `
nodes:
  - { id: fs1, sip: "no-such-host.invalid:5060" }
admin:
  listen: ""
`), nil)
	require.ErrorContains(t, err, "nodes[0].sip")
}
