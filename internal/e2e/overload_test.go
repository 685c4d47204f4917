package e2e

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/callgen"
	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

// TestOverloadShedsNewCalls: while the balancer's process has no CPU to
// spare, new calls get 503 with Retry-After at once (counted as overload)
// and the calls already up go on; with CPU back, new calls are taken
// again. CPU starvation is real: goroutines spinning in the balancer's own
// process, several per CPU, so that ready work queues behind them.
func TestOverloadShedsNewCalls(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 2, overloadLatency: 20 * time.Millisecond})
	u, err := callgen.NewUAC(callgen.NewConfig(c.addr("udp")))
	require.NoError(t, err)
	defer u.Close()
	ctx := context.Background()

	d, res, err := u.Invite(ctx)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode, "not overloaded yet")
	require.False(t, c.app.Proxy().Overloaded())

	var stop atomic.Bool
	var spinners sync.WaitGroup
	stopSpinning := func() {
		stop.Store(true)
		spinners.Wait()
	}
	defer stopSpinning()
	for range 8 * runtime.GOMAXPROCS(0) {
		spinners.Go(func() {
			for n := 0; !stop.Load(); n++ {
				_ = n * n
			}
		})
	}
	eventually(t, c.app.Proxy().Overloaded, "the balancer never noticed it was starved of CPU")

	_, res, err = u.Invite(ctx)
	require.NoError(t, err)
	require.Equal(t, 503, res.StatusCode, "a new call while overloaded")
	require.NotNil(t, res.GetHeader("Retry-After"))
	shed, _ := metricValue(t, c, "sipbalancer_sip_rejected_total", map[string]string{"reason": "overload"})
	require.Equal(t, 1.0, shed)
	overloaded, _ := metricValue(t, c, "sipbalancer_overloaded", nil)
	require.Equal(t, 1.0, overloaded)
	p99, _ := metricValue(t, c, "sipbalancer_sched_latency_p99_seconds", nil)
	require.Greater(t, p99, 0.0)

	// The established call is not shed: its re-INVITE reaches its node.
	res, err = d.Request(ctx, sip.INVITE, nil)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode, "re-INVITE of an established call while overloaded")

	stopSpinning()
	eventually(t, func() bool { return !c.app.Proxy().Overloaded() }, "still shedding with CPU to spare")
	d2, res, err := u.Invite(ctx)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode, "a new call after the overload")
	for _, dl := range []*callgen.Dialog{d, d2} {
		res, err = dl.Bye(ctx)
		require.NoError(t, err)
		require.Equal(t, 200, res.StatusCode)
	}
	c.waitRecord(d.CallID(), func(rec fsemu.CallRecord) bool {
		return isSubsequence([]string{"INVITE", "ACK", "INVITE", "ACK", "BYE"}, rec.Methods)
	})
}
