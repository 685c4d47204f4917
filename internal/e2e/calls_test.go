package e2e

import (
	"context"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/callgen"
	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

// TestCallsStayOnTheirNode: 300 calls with re-INVITE and BYE through the
// balancer all complete, every node gets calls, and every request of a call
// reached the node that got its INVITE — as the nodes recorded it.
func TestCallsStayOnTheirNode(t *testing.T) {
	for _, tc := range []struct{ callerTransport, nodeTransport string }{
		{"udp", "udp"},
		{"tcp", "tcp"},
		{"udp", "tcp"}, // double Record-Route across transports
	} {
		t.Run(tc.callerTransport+"_to_"+tc.nodeTransport, func(t *testing.T) {
			c := startCluster(t, clusterOpts{nodes: 3, nodeTransport: tc.nodeTransport})
			cfg := callgen.NewConfig(c.addr(tc.callerTransport))
			cfg.Transport = tc.callerTransport
			cfg.Calls = 300
			cfg.Rate = 150
			cfg.Timeout = 10 * time.Second
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			rep, err := callgen.Run(ctx, cfg)
			require.NoError(t, err)
			require.Equal(t, 300, rep.Attempted)
			for _, r := range rep.Results {
				require.True(t, r.OK(), "call %s failed: %+v", r.CallID, r)
			}

			perNode := map[string]int{}
			for _, r := range rep.Results {
				n, rec := c.nodeOf(r.CallID)
				require.NotNil(t, n, "no node recorded call %s", r.CallID)
				perNode[n.ID()]++
				// The node saw the whole dialog: INVITE, ACK, re-INVITE,
				// ACK, BYE (retransmissions may add entries, never remove).
				want := []string{"INVITE", "ACK", "INVITE", "ACK", "BYE"}
				if !isSubsequence(want, rec.Methods) || !rec.Ended {
					c.waitRecord(r.CallID, func(rec fsemu.CallRecord) bool { return isSubsequence(want, rec.Methods) && rec.Ended })
				}
			}
			require.Len(t, perNode, 3, "every node gets calls: %v", perNode)
			for id, n := range perNode {
				// Equal weights, round robin: an even spread.
				require.InDelta(t, 100, n, 5, "node %s got %d calls", id, n)
			}
			// Every call ended: the balancer holds no active call.
			eventually(t, func() bool { return c.app.ActiveCalls() == 0 }, "active calls %d", c.app.ActiveCalls())
		})
	}
}

func isSubsequence(want, got []string) bool {
	i := 0
	for _, g := range got {
		if i < len(want) && g == want[i] {
			i++
		}
	}
	return i == len(want)
}

// TestCancelReachesInviteNode: a CANCEL from the caller reaches the node
// that is ringing, and the caller gets 487.
func TestCancelReachesInviteNode(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			c := startCluster(t, clusterOpts{nodes: 2, node: func(_ int, cfg *fsemu.Config) {
				cfg.AnswerDelay = time.Hour // rings until cancelled
			}})
			cfg := callgen.NewConfig(c.addr(transport))
			cfg.Transport = transport
			cfg.Timeout = 10 * time.Second
			u, err := callgen.NewUAC(cfg)
			require.NoError(t, err)
			defer u.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for i := 0; i < 4; i++ {
				var callID string
				final, err := u.InviteAndCancel(ctx, func(res *sip.Response) bool {
					callID = string(*res.CallID())
					return res.StatusCode == 180
				})
				require.NoError(t, err)
				require.Equal(t, 487, final.StatusCode)
				n, rec := c.nodeOf(callID)
				require.NotNil(t, n)
				eventually(t, func() bool {
					_, rec = c.nodeOf(callID)
					return rec.Cancelled && slices.Contains(rec.Methods, "CANCEL")
				}, "node %s never saw the CANCEL: %v", n.ID(), rec.Methods)
			}
			eventually(t, func() bool {
				return c.nodes[0].Active()+c.nodes[1].Active() == 0
			}, "nodes still hold calls")
		})
	}
}

// TestFailoverSkipsBadNodes: a node that answers 503 and one that never
// answers are skipped; no call fails.
func TestFailoverSkipsBadNodes(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 3, node: func(i int, cfg *fsemu.Config) {
		switch i {
		case 0:
			cfg.Fail503Ratio = 1
		case 1:
			cfg.DropRatio = 1
		}
	}})
	cfg := callgen.NewConfig(c.addr("udp"))
	cfg.Calls = 30
	cfg.Rate = 30
	cfg.Timeout = 15 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := callgen.Run(ctx, cfg)
	require.NoError(t, err)
	require.Equal(t, 0, rep.Failed, "failed calls: %+v", failures(rep))
	for _, r := range rep.Results {
		// Only fs3 answers; fs1 and fs2 may have seen the INVITE first.
		n, _ := c.answeredBy(r.CallID)
		require.NotNil(t, n, "call %s answered by no node", r.CallID)
		require.Equal(t, "fs3", n.ID())
	}
	require.Greater(t, c.nodes[0].Stats().Rejected503, int64(0), "fs1 was never tried")
	require.Greater(t, c.nodes[1].Stats().Dropped, int64(0), "fs2 was never tried")
	require.Equal(t, int64(30), c.nodes[2].Stats().Answered)
}

func failures(rep *callgen.Report) []callgen.CallResult {
	var out []callgen.CallResult
	for _, r := range rep.Results {
		if !r.OK() {
			out = append(out, r)
		}
	}
	return out
}

// TestNodeNotRunning: a configured node that does not work costs no failed
// call. A silent one (its packets vanish: a host gone, a firewall) gets the
// first INVITEs, which fail over after invite_timeout; then passive failures
// and probes take it out. One whose port is closed is refused by its host:
// the first probe takes it out before it costs any caller a second.
func TestNodeNotRunning(t *testing.T) {
	t.Run("silent", func(t *testing.T) {
		// A socket nobody reads: no answer, no ICMP.
		pc, err := net.ListenPacket("udp", "127.0.1.9:0")
		require.NoError(t, err)
		defer pc.Close()
		c := startCluster(t, clusterOpts{nodes: 1, extraNodes: map[string]string{pc.LocalAddr().String(): "dead"}})
		cfg := callgen.NewConfig(c.addr("udp"))
		cfg.Calls = 6
		cfg.Rate = 0
		cfg.Concurrency = 6 // all at once, before any probe has judged it
		cfg.Timeout = 15 * time.Second
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		rep, err := callgen.Run(ctx, cfg)
		require.NoError(t, err)
		require.Equal(t, 0, rep.Failed, "failed: %+v", failures(rep))
		slow := 0
		for _, r := range rep.Results {
			if r.SetupTime >= time.Second {
				slow++
				// It failed over after invite_timeout (1s); generous bound
				// for a loaded machine.
				require.Less(t, r.SetupTime, 4*time.Second)
			}
		}
		require.Greater(t, slow, 0, "no call was sent to the dead node first")
		eventually(t, func() bool { return c.app.Dispatcher().Node("dead").State() == dispatcher.StateDown },
			"the silent node stays in rotation")
	})
	t.Run("refused", func(t *testing.T) {
		dead := freeUDPAddr(t, "127.0.1.9")
		c := startCluster(t, clusterOpts{nodes: 1, extraNodes: map[string]string{dead: "dead"}})
		eventually(t, func() bool { return c.app.Dispatcher().Node("dead").State() == dispatcher.StateDown },
			"a refused node stays in rotation")
		st, _ := c.app.Checker().NodeStatus("dead")
		require.Equal(t, "probe_refused", st.Reason)
		cfg := callgen.NewConfig(c.addr("udp"))
		cfg.Calls, cfg.Rate = 10, 50
		rep, err := callgen.Run(context.Background(), cfg)
		require.NoError(t, err)
		require.Equal(t, 0, rep.Failed)
		for _, r := range rep.Results {
			require.Less(t, r.SetupTime, time.Second, "a call waited for the dead node")
		}
	})
}

// TestMaxForwardsZero: 483 Too Many Hops, and nothing reaches a node.
func TestMaxForwardsZero(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 1})
	u, err := callgen.NewUAC(callgen.NewConfig(c.addr("udp")))
	require.NoError(t, err)
	defer u.Close()
	_, res, err := u.Invite(context.Background(), callgen.WithMaxForwards(0))
	require.NoError(t, err)
	require.Equal(t, 483, res.StatusCode)
	require.Zero(t, c.nodes[0].Stats().Invites)

	// Max-Forwards 1 is forwarded (with 0).
	d, res, err := u.Invite(context.Background(), callgen.WithMaxForwards(1))
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	_, err = d.Bye(context.Background())
	require.NoError(t, err)
}

// TestLoopDetected: a node configured at the balancer's own address sends
// the INVITE back to it: 482 Loop Detected, not a storm.
func TestLoopDetected(t *testing.T) {
	self := freeUDPAddr(t, "127.0.0.1")
	c := startCluster(t, clusterOpts{listenUDP: self, extraNodes: map[string]string{self: "loop"}})
	u, err := callgen.NewUAC(callgen.NewConfig(c.addr("udp")))
	require.NoError(t, err)
	defer u.Close()
	_, res, err := u.Invite(context.Background())
	require.NoError(t, err)
	require.Equal(t, 482, res.StatusCode)
}

// TestOptionsToBalancer: carriers' OPTIONS pings get 200 while a node takes
// calls and 503 when none does.
func TestOptionsToBalancer(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 2})
	u, err := callgen.NewUAC(callgen.NewConfig(c.addr("udp")))
	require.NoError(t, err)
	defer u.Close()
	require.Equal(t, 200, options(t, c.addr("udp")))
	for _, n := range c.app.Dispatcher().Snapshot().Nodes() {
		n.SetState(dispatcher.StateDisabled)
	}
	require.Equal(t, 503, options(t, c.addr("udp")))
	// A new INVITE gets 503 with Retry-After, not silence.
	_, res, err := u.Invite(context.Background())
	require.NoError(t, err)
	require.Equal(t, 503, res.StatusCode)
	require.NotNil(t, res.GetHeader("Retry-After"))
	require.Zero(t, c.nodes[0].Stats().Invites+c.nodes[1].Stats().Invites)
}

// TestNodeHangsUp: a BYE from the node travels back through the balancer to
// the caller (node → carrier direction of an inbound call).
func TestNodeHangsUp(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 2, node: func(_ int, cfg *fsemu.Config) {
		cfg.HoldTime = 200 * time.Millisecond
	}})
	cfg := callgen.NewConfig(c.addr("udp"))
	cfg.Calls = 10
	cfg.Rate = 20
	cfg.ReInvite = false
	cfg.Hold = time.Minute // only the node's BYE ends the calls in time
	cfg.Timeout = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := callgen.Run(ctx, cfg)
	require.NoError(t, err)
	for _, r := range rep.Results {
		require.True(t, r.OK(), "%+v", r)
		require.True(t, r.RemoteBye, "call %s was not hung up by the node", r.CallID)
	}
	require.Equal(t, int64(10), c.nodes[0].Stats().ByesSent+c.nodes[1].Stats().ByesSent)
}
