package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/callgen"
	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
	"github.com/sipbalancer/sipbalancer/pkg/health"
)

// mediaYAML turns the media probe on with a short interval.
func mediaYAML(interval time.Duration, threshold, rise int) string {
	return fmt.Sprintf(`health:
  media:
    enabled: true
    interval: %s
    duration: 200ms
    timeout: 2s
    threshold: %d
    rise: %d
`, interval, threshold, rise)
}

// metricValue sums the samples of a family whose labels include want.
func metricValue(t *testing.T, c *cluster, name string, want map[string]string) (float64, bool) {
	t.Helper()
	fams, err := c.app.Registry().Gather()
	require.NoError(t, err)
	var sum float64
	found := false
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	metrics:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if got[k] != v {
					continue metrics
				}
			}
			found = true
			switch {
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum, found
}

// TestMediaProbeTakesDeadMediaOut: a node whose RTP echo stops — its SIP
// still perfect — is out of rotation within the media probe's interval ×
// threshold, gets no new calls while out, and is back when the echo
// resumes. Probe calls go straight to the nodes: the balancer's call
// metrics never see them.
func TestMediaProbeTakesDeadMediaOut(t *testing.T) {
	const interval, threshold, rise = 500 * time.Millisecond, 2, 2
	c := startCluster(t, clusterOpts{nodes: 3, yaml: mediaYAML(interval, threshold, rise),
		node: func(_ int, cfg *fsemu.Config) { cfg.RTP = true }})
	states := watchStates(c)
	fs2 := c.nodes[1]

	for _, id := range []string{"fs1", "fs2", "fs3"} {
		eventually(t, func() bool {
			st, ok := c.app.Checker().NodeStatus(id)
			return ok && st.Media != nil && st.Media.Probes["ok"] >= 2
		}, "no good media probes of %s", id)
		st, _ := c.app.Checker().NodeStatus(id)
		assert.Zero(t, st.Media.Loss, id)
		assert.Positive(t, st.Media.RTT, id)
	}
	// The probes were calls on the nodes, not calls through the balancer.
	var probeCalls int
	for _, n := range c.nodes {
		for _, r := range n.Calls() {
			require.True(t, r.Echo, "only probe calls so far")
			probeCalls++
		}
	}
	require.Positive(t, probeCalls)
	calls, _ := metricValue(t, c, "sipbalancer_calls_total", nil)
	assert.Zero(t, calls, "probe calls are not customer calls")
	dispatched, _ := metricValue(t, c, "sipbalancer_dispatches_total", nil)
	assert.Zero(t, dispatched)
	okProbes, found := metricValue(t, c, "sipbalancer_node_media_probes_total", map[string]string{"node": "fs2", "result": "ok"})
	require.True(t, found)
	assert.GreaterOrEqual(t, okProbes, 2.0)

	// Echo off on fs2: SIP answers, media is dead.
	off := time.Now()
	fs2.SetEchoEnabled(false)
	var down health.Change
	eventually(t, func() bool {
		var ok bool
		down, ok = states.first("fs2", dispatcher.StateDown, off)
		return ok
	}, "fs2 never went down")
	took := down.At.Sub(off)
	t.Logf("fs2 down after %v (interval %v × threshold %d), reason %s", took, interval, threshold, down.Reason)
	require.Equal(t, health.ReasonMedia, down.Reason)
	// The probe in flight when the echo stopped may still pass (most of
	// its media came back); then threshold probes, interval apart: about
	// interval × threshold. Slack for the race detector on a loaded
	// machine.
	require.LessOrEqual(t, took, interval*threshold+time.Second)
	st, _ := c.app.Checker().NodeStatus("fs2")
	assert.True(t, st.Media.Down)
	assert.Equal(t, "no_rtp", st.Media.Result)
	loss, _ := metricValue(t, c, "sipbalancer_node_media_loss_ratio", map[string]string{"node": "fs2"})
	assert.Equal(t, 1.0, loss)
	changes, _ := metricValue(t, c, "sipbalancer_node_state_changes_total", map[string]string{"node": "fs2", "reason": "media"})
	assert.Equal(t, 1.0, changes)

	// New calls, with media, avoid fs2 and lose nothing.
	cfg := callgen.NewConfig(c.addr("udp"))
	cfg.Calls, cfg.Rate, cfg.RTP, cfg.ReInvite = 20, 50, true, false
	rep, err := callgen.Run(context.Background(), cfg)
	require.NoError(t, err)
	require.Zero(t, rep.Failed)
	for _, r := range rep.Results {
		n, _ := c.nodeOf(r.CallID)
		require.NotEqual(t, fs2, n, "a call reached fs2 while its media was dead")
	}
	require.NotNil(t, rep.RTP)
	assert.Zero(t, rep.RTP.LossMax)
	assert.Zero(t, rep.RTP.NoMedia)

	// Echo back: rise good probes and fs2 is up again.
	back := time.Now()
	fs2.SetEchoEnabled(true)
	var up health.Change
	eventually(t, func() bool {
		var ok bool
		up, ok = states.first("fs2", dispatcher.StateUp, back)
		return ok
	}, "fs2 never came back")
	t.Logf("fs2 back after %v", up.At.Sub(back))
	require.LessOrEqual(t, up.At.Sub(back), interval*rise+time.Second)

	// No probe call was left up on any node.
	for _, n := range c.nodes {
		eventually(t, func() bool { return n.Active() == 0 }, "calls left up on %s", n.ID())
	}
}

// TestCallsWithRTP: calls with media through the balancer to emulated
// nodes that play a tone: every call has media both ways, 0 % loss.
func TestCallsWithRTP(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 3, node: func(_ int, cfg *fsemu.Config) { cfg.RTP = true }})
	cfg := callgen.NewConfig(c.addr("udp"))
	cfg.Calls, cfg.Rate, cfg.RTP = 60, 100, true
	cfg.Hold = 200 * time.Millisecond
	rep, err := callgen.Run(context.Background(), cfg)
	require.NoError(t, err)
	require.Zero(t, rep.Failed)
	require.NotNil(t, rep.RTP)
	m := rep.RTP
	t.Logf("rtp: %d calls, sent %d, received %d, loss max %.2f %%, jitter p50 %v max %v",
		m.Calls, m.Sent, m.Received, 100*m.LossMax, m.JitterP50, m.JitterMax)
	assert.Equal(t, 60, m.Calls)
	assert.Zero(t, m.NoMedia)
	assert.Zero(t, m.Stopped)
	assert.Zero(t, m.Lost)
	assert.Zero(t, m.LossMax, "0 % loss on loopback")
	for _, r := range rep.Results {
		// Two holds of 200 ms at 20 ms a packet.
		assert.GreaterOrEqual(t, r.RTPSent, int64(18), r.CallID)
		assert.GreaterOrEqual(t, r.RTPReceived, int64(15), r.CallID)
	}
	// Each node counted what the calls it carried sent.
	var nodeRx int64
	for _, n := range c.nodes {
		nodeRx += n.Stats().RTPReceived
	}
	assert.InDelta(t, float64(m.Sent), float64(nodeRx), float64(m.Calls), "at most the last packet of a call unread at its BYE")
}
