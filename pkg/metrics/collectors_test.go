package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// gatherNodes registers the node collector over views and returns the
// families by name.
func gatherNodes(t *testing.T, views []NodeView) map[string]*dto.MetricFamily {
	t.Helper()
	reg := prometheus.NewRegistry()
	RegisterNodes(reg, func() []NodeView { return views })
	fams, err := reg.Gather()
	require.NoError(t, err)
	out := map[string]*dto.MetricFamily{}
	for _, f := range fams {
		out[f.GetName()] = f
	}
	return out
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

func TestNodeMediaSeries(t *testing.T) {
	fams := gatherNodes(t, []NodeView{
		{ID: "fs1", State: "up", MediaProbes: map[string]uint64{"ok": 7, "no_rtp": 2}, HasMedia: true,
			MediaLoss: 0.04, MediaReceived: 48, MediaJitter: 3 * time.Millisecond, MediaRTT: 25 * time.Millisecond},
		// Probed, but the last measured probe got no RTP back: loss 1, no
		// jitter or RTT to report.
		{ID: "fs2", State: "down", MediaProbes: map[string]uint64{"no_rtp": 2}, HasMedia: true, MediaLoss: 1},
		// Media probe off.
		{ID: "fs3", State: "up"},
	})

	loss := fams["sipbalancer_node_media_loss_ratio"]
	require.NotNil(t, loss)
	require.Len(t, loss.GetMetric(), 2)
	byNode := map[string]float64{}
	for _, m := range loss.GetMetric() {
		byNode[labels(m)["node"]] = m.GetGauge().GetValue()
	}
	assert.Equal(t, map[string]float64{"fs1": 0.04, "fs2": 1}, byNode)

	jitter := fams["sipbalancer_node_media_jitter_seconds"]
	require.Len(t, jitter.GetMetric(), 1)
	assert.Equal(t, "fs1", labels(jitter.GetMetric()[0])["node"])
	assert.InDelta(t, 0.003, jitter.GetMetric()[0].GetGauge().GetValue(), 1e-12)

	rtt := fams["sipbalancer_node_media_rtt_seconds"]
	require.Len(t, rtt.GetMetric(), 1)
	assert.InDelta(t, 0.025, rtt.GetMetric()[0].GetGauge().GetValue(), 1e-12)

	probes := fams["sipbalancer_node_media_probes_total"]
	require.NotNil(t, probes)
	assert.Equal(t, dto.MetricType_COUNTER, probes.GetType())
	got := map[string]float64{}
	for _, m := range probes.GetMetric() {
		l := labels(m)
		got[l["node"]+"/"+l["result"]] = m.GetCounter().GetValue()
	}
	assert.Equal(t, map[string]float64{
		"fs1/ok": 7, "fs1/loss": 0, "fs1/no_rtp": 2, "fs1/error": 0,
		"fs2/ok": 0, "fs2/loss": 0, "fs2/no_rtp": 2, "fs2/error": 0,
	}, got, "every result of every probed node; none for a node without the probe")
}

func TestNodeMediaSeriesAbsentWithoutProbe(t *testing.T) {
	fams := gatherNodes(t, []NodeView{{ID: "fs1", State: "up"}})
	for _, name := range []string{"sipbalancer_node_media_loss_ratio", "sipbalancer_node_media_jitter_seconds",
		"sipbalancer_node_media_rtt_seconds", "sipbalancer_node_media_probes_total"} {
		assert.Nil(t, fams[name], name)
	}
	assert.NotNil(t, fams["sipbalancer_node_state"])
}
