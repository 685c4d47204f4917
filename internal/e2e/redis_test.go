package e2e

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/internal/redistest"
	"github.com/sipbalancer/sipbalancer/pkg/callgen"
	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

func redisSession(addr string, extra string) string {
	return fmt.Sprintf("  store: redis\n  redis: { addrs: [%q] }\n%s", addr, extra)
}

// establish places n calls through target and returns their dialogs.
func establish(t *testing.T, target string, n int) (*callgen.UAC, []*callgen.Dialog) {
	t.Helper()
	cfg := callgen.NewConfig(target)
	cfg.Timeout = 10 * time.Second
	u, err := callgen.NewUAC(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { u.Close() })
	var ds []*callgen.Dialog
	for i := 0; i < n; i++ {
		d, res, err := u.Invite(context.Background())
		require.NoError(t, err)
		require.Equal(t, 200, res.StatusCode)
		ds = append(ds, d)
	}
	return u, ds
}

// TestTwoInstancesShareCalls: calls set up through instance A have their
// re-INVITE, UPDATE and BYE sent through instance B, and they reach the node
// that took the INVITE.
func TestTwoInstancesShareCalls(t *testing.T) {
	r := redistest.Start(t)
	c := startCluster(t, clusterOpts{nodes: 3, session: redisSession(r.Addr(), "")})
	b := c.instance("127.0.0.1:0")
	bAddr := b.Proxy().Addr("udp")
	_, ds := establish(t, c.addr("udp"), 12)
	for _, d := range ds {
		owner, _ := c.nodeOf(d.CallID())
		require.NotNil(t, owner)
		d.SetNextHop(bAddr)
		for _, m := range []sip.RequestMethod{sip.INVITE, sip.UPDATE} {
			res, err := d.Request(context.Background(), m, nil)
			require.NoError(t, err)
			require.Equal(t, 200, res.StatusCode, "%s of %s through B", m, d.CallID())
		}
		res, err := d.Bye(context.Background())
		require.NoError(t, err)
		require.Equal(t, 200, res.StatusCode)
		n, rec := c.nodeOf(d.CallID())
		require.Equal(t, owner, n)
		// The node records requests beside handling them: wait for it.
		eventually(t, func() bool {
			_, rec = c.nodeOf(d.CallID())
			return isSubsequence([]string{"INVITE", "ACK", "INVITE", "ACK", "UPDATE", "BYE"}, rec.Methods)
		}, "call %s on %s: %v", d.CallID(), owner.ID(), rec.Methods)
	}
}

// TestCancelThroughOtherInstance: a CANCEL sent to B for an INVITE that A
// forwarded reaches the INVITE's node (B finds it in Redis and derives A's
// branch), and the caller gets 487.
func TestCancelThroughOtherInstance(t *testing.T) {
	r := redistest.Start(t)
	c := startCluster(t, clusterOpts{nodes: 2, session: redisSession(r.Addr(), ""),
		node: func(_ int, cfg *fsemu.Config) { cfg.AnswerDelay = time.Hour }})
	b := c.instance("127.0.0.1:0")
	u, err := callgen.NewUAC(callgen.NewConfig(c.addr("udp")))
	require.NoError(t, err)
	defer u.Close()
	for i := 0; i < 3; i++ {
		var callID string
		final, err := u.InviteAndCancel(context.Background(), func(res *sip.Response) bool {
			if res.StatusCode != 180 {
				return false
			}
			callID = string(*res.CallID())
			// A carrier cancels seconds later; here, as soon as B can
			// know the call (A's write reached Redis).
			eventually(t, func() bool {
				_, err := b.Store().Lookup(context.Background(), callID)
				return err == nil
			}, "B never saw the binding of %s", callID)
			return true
		}, callgen.WithCancelTo(b.Proxy().Addr("udp")))
		require.NoError(t, err)
		require.Equal(t, 487, final.StatusCode)
		n, rec := c.nodeOf(callID)
		require.NotNil(t, n)
		eventually(t, func() bool {
			_, rec = c.nodeOf(callID)
			return rec.Cancelled && slices.Contains(rec.Methods, "CANCEL")
		}, "node %s never recorded the CANCEL: %v", n.ID(), rec.Methods)
	}
}

// TestInstanceDiesCallsGoOn: one of two instances dies with calls up; every
// call's later requests, sent to the survivor, reach their node.
func TestInstanceDiesCallsGoOn(t *testing.T) {
	r := redistest.Start(t)
	c := startCluster(t, clusterOpts{nodes: 3, session: redisSession(r.Addr(), "")})
	b := c.instance("127.0.0.1:0")
	_, ds := establish(t, c.addr("udp"), 30)
	owners := map[string]*fsemu.Node{}
	for _, d := range ds {
		owners[d.CallID()], _ = c.nodeOf(d.CallID())
		// Established: the node has the ACK (one still inside A when it
		// dies is lost with it, like any packet a dying proxy holds).
		eventually(t, func() bool {
			_, rec := c.nodeOf(d.CallID())
			return isSubsequence([]string{"INVITE", "ACK"}, rec.Methods)
		}, "call %s never established", d.CallID())
	}
	require.NoError(t, c.app.Close()) // instance A is gone
	for _, d := range ds {
		d.SetNextHop(b.Proxy().Addr("udp"))
		res, err := d.Request(context.Background(), sip.INVITE, nil)
		require.NoError(t, err)
		require.Equal(t, 200, res.StatusCode)
		res, err = d.Bye(context.Background())
		require.NoError(t, err)
		require.Equal(t, 200, res.StatusCode)
		n, _ := c.nodeOf(d.CallID())
		require.Equal(t, owners[d.CallID()], n)
		eventually(t, func() bool {
			_, rec := c.nodeOf(d.CallID())
			return rec.Ended
		}, "call %s not ended on its node", d.CallID())
	}
}

// TestRedisDownUnderLoad: Redis killed while calls flow: no call fails
// (new calls never wait for Redis; in-dialog requests route by token), the
// degradation is visible, and bindings made during the outage reach Redis
// once it is back.
func TestRedisDownUnderLoad(t *testing.T) {
	r := redistest.Start(t)
	c := startCluster(t, clusterOpts{nodes: 3, session: redisSession(r.Addr(), "")})
	load := runLoad(t, c.addr("udp"), 100, 5*time.Second)
	eventually(t, func() bool { return c.app.Redis().Stats().Written > 50 }, "no writes reached Redis")
	r.Stop()
	eventually(t, func() bool { return !c.app.Redis().Healthy() }, "the outage is not visible")
	writtenAtStop := c.app.Redis().Stats().Written
	rep := <-load
	require.NotNil(t, rep)
	require.Zero(t, rep.Failed, "calls failed while Redis was down: %+v", failures(rep))

	// A call made during the outage, still up.
	_, ds := establish(t, c.addr("udp"), 1)
	callID := ds[0].CallID()
	r.Restart()
	eventually(t, func() bool { return c.app.Redis().Healthy() }, "the store never recovered")
	eventually(t, func() bool { return c.app.Redis().Stats().Written > writtenAtStop },
		"nothing written after the restart (still %d)", writtenAtStop)
	eventually(t, func() bool {
		v, err := r.Do("EXISTS", redisDialogKey(t, c, callID))
		return err == nil && v == int64(1)
	}, "the binding made during the outage never reached Redis")
	res, err := ds[0].Bye(context.Background())
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
}

// redisDialogKey asks the store which key a Call-ID lives under.
func redisDialogKey(t *testing.T, c *cluster, callID string) string {
	t.Helper()
	return c.app.Redis().DialogKey(callID)
}

// TestRehome: with re-homing on, the calls of a node that died get a new
// owner; the first instance to decide writes it, and the other follows.
func TestRehome(t *testing.T) {
	r := redistest.Start(t)
	c := startCluster(t, clusterOpts{nodes: 3, session: redisSession(r.Addr(), "  rehome: true\n")})
	b := c.instance("127.0.0.1:0")
	_, ds := establish(t, c.addr("udp"), 6)
	var d *callgen.Dialog
	var dead *fsemu.Node
	for _, x := range ds {
		if n, _ := c.nodeOf(x.CallID()); n == c.nodes[0] {
			d, dead = x, n
		}
	}
	require.NotNil(t, d, "no call on fs1")
	require.NoError(t, dead.Close())
	for _, a := range []interface{ Dispatcher() *dispatcher.Dispatcher }{c.app, b} {
		eventually(t, func() bool { return a.Dispatcher().Node("fs1").State() == dispatcher.StateDown }, "fs1 not down")
	}
	before := map[*fsemu.Node]int64{}
	for _, n := range c.nodes[1:] {
		before[n] = n.Stats().NoDialog
	}
	// Through A, then through B: both reach the same new owner (it does not
	// know the call — no shared database here — and answers 481; what
	// matters is where the requests went).
	_, err := d.Request(context.Background(), sip.INVITE, nil)
	require.NoError(t, err)
	d.SetNextHop(b.Proxy().Addr("udp"))
	_, err = d.Request(context.Background(), sip.INVITE, nil)
	require.NoError(t, err)
	var got []string
	for _, n := range c.nodes[1:] {
		if k := n.Stats().NoDialog - before[n]; k > 0 {
			got = append(got, fmt.Sprintf("%s:%d", n.ID(), k))
		}
	}
	require.Len(t, got, 1, "requests went to %v", got)
	require.Contains(t, got[0], ":2")
}
