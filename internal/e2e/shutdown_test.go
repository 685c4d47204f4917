package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/callgen"
	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

// TestGracefulShutdown: on shutdown the balancer refuses new INVITEs with
// 503 at once, keeps routing the requests of established calls, and stops
// as soon as the last call ended — before its deadline.
func TestGracefulShutdown(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 2})
	u, err := callgen.NewUAC(callgen.NewConfig(c.addr("udp")))
	require.NoError(t, err)
	defer u.Close()
	ctx := context.Background()

	d, res, err := u.Invite(ctx)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	eventually(t, func() bool { return c.app.ActiveCalls() == 1 }, "the call is not counted active")

	done := make(chan error, 1)
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	go func() { done <- c.app.Shutdown(sctx) }()
	eventually(t, c.app.Proxy().Draining, "not draining")

	// New calls: 503 with Retry-After.
	_, res, err = u.Invite(ctx)
	require.NoError(t, err)
	require.Equal(t, 503, res.StatusCode)
	require.NotNil(t, res.GetHeader("Retry-After"))

	// The established call goes on: re-INVITE and BYE reach its node.
	res, err = d.Request(ctx, sip.INVITE, nil)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	select {
	case err := <-done:
		t.Fatalf("shutdown finished with a call still up: %v", err)
	default:
	}
	res, err = d.Bye(ctx)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)

	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(30 * time.Second):
		t.Fatal("shutdown did not finish after the last call ended")
	}
	require.Nil(t, sctx.Err(), "shutdown waited for its deadline instead of the last call")
	c.waitRecord(d.CallID(), func(rec fsemu.CallRecord) bool {
		return isSubsequence([]string{"INVITE", "ACK", "INVITE", "ACK", "BYE"}, rec.Methods)
	})
}
