package e2e

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/callgen"
	"github.com/sipbalancer/sipbalancer/pkg/config"
	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
	"github.com/sipbalancer/sipbalancer/pkg/health"
)

// stateLog records the checker's state changes with their times.
type stateLog struct {
	mu      sync.Mutex
	changes []health.Change
}

func watchStates(c *cluster) *stateLog {
	l := &stateLog{}
	c.app.Checker().OnChange(func(ch health.Change) {
		l.mu.Lock()
		l.changes = append(l.changes, ch)
		l.mu.Unlock()
	})
	return l
}

// first returns the first change of node into state at or after since.
func (l *stateLog) first(node string, state dispatcher.State, since time.Time) (health.Change, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ch := range l.changes {
		if ch.Node == node && ch.To == state && !ch.At.Before(since) {
			return ch, true
		}
	}
	return health.Change{}, false
}

// newCallFailures counts calls whose INVITE did not succeed: what a node
// failure must never cause. (A call already up on a node that dies dies
// with it; that is not a new-call failure.)
func newCallFailures(rep *callgen.Report) []callgen.CallResult {
	var out []callgen.CallResult
	for _, r := range rep.Results {
		if r.SetupStatus < 200 || r.SetupStatus >= 300 {
			out = append(out, r)
		}
	}
	return out
}

// runLoad places calls at rate for d in the background.
func runLoad(t *testing.T, target string, rate float64, d time.Duration) <-chan *callgen.Report {
	t.Helper()
	cfg := callgen.NewConfig(target)
	cfg.Calls = int(rate * d.Seconds())
	cfg.Rate = rate
	cfg.Timeout = 15 * time.Second
	out := make(chan *callgen.Report, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
		defer cancel()
		rep, err := callgen.Run(ctx, cfg)
		if err != nil {
			t.Errorf("callgen: %v", err)
		}
		out <- rep
	}()
	return out
}

// TestNodeFailures: a crashed node (kill -9) leaves rotation within 1 s and
// a hung one (SIGSTOP, no RST) within 3 s, with default settings, while
// calls flow at 100/s and no new call fails; a hung node that resumes is
// back within rise × interval.
func TestNodeFailures(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sig   syscall.Signal
		bound time.Duration
	}{
		{"crash", syscall.SIGKILL, time.Second},
		{"hang", syscall.SIGSTOP, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var nodes []*procNode
			var yaml []string
			for i, ip := range []string{"127.0.2.1", "127.0.2.2", "127.0.2.3"} {
				n := startProcNode(t, "p"+string(rune('1'+i)), ip)
				nodes = append(nodes, n)
				yaml = append(yaml, n.yaml())
			}
			c := startCluster(t, clusterOpts{extraYAMLNodes: yaml, policy: "weighted_round_robin"})
			states := watchStates(c)
			victim := nodes[1]
			eventually(t, func() bool {
				st, ok := c.app.Checker().NodeStatus(victim.id)
				return ok && st.ESL != nil && st.ESL.Connected
			}, "ESL of %s never connected", victim.id)

			load := runLoad(t, c.addr("udp"), 100, 6*time.Second)
			// Let calls flow to every node first. The dispatch counter
			// only grows: polling the node's in-flight or active calls
			// could miss every short call on a loaded machine.
			eventually(t, func() bool {
				n, _ := metricValue(t, c, "sipbalancer_dispatches_total", map[string]string{"node": victim.id})
				return n > 0
			}, "no call reached %s", victim.id)
			at := time.Now()
			victim.signal(tc.sig)

			ch, ok := func() (health.Change, bool) {
				var ch health.Change
				var ok bool
				eventually(t, func() bool {
					ch, ok = states.first(victim.id, dispatcher.StateDown, at)
					return ok
				}, "%s never went down", victim.id)
				return ch, ok
			}()
			require.True(t, ok)
			took := ch.At.Sub(at)
			t.Logf("%s: down after %v (reason %s)", tc.name, took, ch.Reason)
			require.LessOrEqual(t, took, tc.bound, "reason %s", ch.Reason)

			rep := <-load
			require.NotNil(t, rep)
			require.Empty(t, newCallFailures(rep), "new calls failed")
			t.Logf("%d calls, %d failed in dialog (up on %s when it died)", rep.Attempted, rep.Failed, victim.id)

			if tc.sig == syscall.SIGSTOP {
				// Resumed: back in rotation within rise × interval (2 s),
				// with slack for a loaded machine.
				back := time.Now()
				victim.signal(syscall.SIGCONT)
				var up health.Change
				eventually(t, func() bool {
					up, ok = states.first(victim.id, dispatcher.StateUp, back)
					return ok
				}, "%s never came back", victim.id)
				t.Logf("back after %v", up.At.Sub(back))
				require.LessOrEqual(t, up.At.Sub(back), 4*time.Second)
			}
		})
	}
}

// TestPausedNodeTakesNoNewCalls: `fsctl pause` makes a node full — seen by
// OPTIONS (FreeSWITCH 1.11.0, or sip-options-respond-503-on-busy) or only
// by the Event Socket (1.11.1+ default) — it gets no new calls, and the
// calls it carries go on.
func TestPausedNodeTakesNoNewCalls(t *testing.T) {
	for _, always200 := range []bool{false, true} {
		name := "options_503"
		if always200 {
			name = "options_200_esl_only"
		}
		t.Run(name, func(t *testing.T) {
			c := startCluster(t, clusterOpts{nodes: 3, esl: true, node: func(_ int, cfg *fsemu.Config) {
				cfg.OptionsAlways200 = always200
			}})
			fs1 := c.nodes[0]
			eventually(t, func() bool {
				st, _ := c.app.Checker().NodeStatus("fs1")
				return st.ESL != nil && st.ESL.Connected
			}, "ESL not connected")

			// Calls up on every node, fs1 included.
			u, err := callgen.NewUAC(callgen.NewConfig(c.addr("udp")))
			require.NoError(t, err)
			defer u.Close()
			var onFS1 []*callgen.Dialog
			for i := 0; i < 6; i++ {
				d, res, err := u.Invite(context.Background())
				require.NoError(t, err)
				require.Equal(t, 200, res.StatusCode)
				if n, _ := c.nodeOf(d.CallID()); n == fs1 {
					onFS1 = append(onFS1, d)
				} else {
					_, _ = d.Bye(context.Background())
				}
			}
			require.NotEmpty(t, onFS1)

			fs1.Pause()
			eventually(t, func() bool { return c.app.Dispatcher().Node("fs1").State() == dispatcher.StateFull }, "fs1 not full")
			st, _ := c.app.Checker().NodeStatus("fs1")
			t.Logf("fs1 full: %s", st.Reason)
			before := fs1.Stats().Invites

			cfg := callgen.NewConfig(c.addr("udp"))
			cfg.Calls, cfg.Rate = 60, 100
			rep, err := callgen.Run(context.Background(), cfg)
			require.NoError(t, err)
			require.Zero(t, rep.Failed)
			require.Equal(t, before, fs1.Stats().Invites, "a paused node got new INVITEs")

			// Its calls go on: re-INVITE and BYE reach it.
			for _, d := range onFS1 {
				res, err := d.Request(context.Background(), sip.INVITE, nil)
				require.NoError(t, err)
				require.Equal(t, 200, res.StatusCode)
				res, err = d.Bye(context.Background())
				require.NoError(t, err)
				require.Equal(t, 200, res.StatusCode)
				c.waitRecord(d.CallID(), func(rec fsemu.CallRecord) bool { return rec.Ended })
			}

			fs1.Resume()
			eventually(t, func() bool { return c.app.Dispatcher().Node("fs1").State() == dispatcher.StateUp }, "fs1 not back")
		})
	}
}

// TestWrongESLPassword: reported on the node's status, and the node is
// judged by its probes (a typo must not take the pool down).
func TestWrongESLPassword(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 2, esl: true, nodeYAML: `, esl_password: "wrong"`})
	eventually(t, func() bool {
		st, _ := c.app.Checker().NodeStatus("fs1")
		return st.ESL != nil && st.ESL.AuthFailed
	}, "wrong password not reported")
	require.Equal(t, dispatcher.StateUp, c.app.Dispatcher().Node("fs1").State())
	cfg := callgen.NewConfig(c.addr("udp"))
	cfg.Calls, cfg.Rate = 10, 50
	rep, err := callgen.Run(context.Background(), cfg)
	require.NoError(t, err)
	require.Zero(t, rep.Failed)
}

// TestLoadDrivesDistribution: with least_load, a node whose FreeSWITCH
// reports 80 % of Max-Sessions busy gets markedly fewer new calls than its
// idle peers.
func TestLoadDrivesDistribution(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 3, esl: true, policy: "least_load", node: func(_ int, cfg *fsemu.Config) {
		cfg.MaxSessions = 100
	}})
	busy := c.nodes[0]
	// 80 calls straight to fs1 (not through the balancer): load the balancer
	// can only learn from the Event Socket.
	direct, err := callgen.NewUAC(callgen.NewConfig(busy.Addr()))
	require.NoError(t, err)
	defer direct.Close()
	var held []*callgen.Dialog
	for i := 0; i < 80; i++ {
		d, res, err := direct.Invite(context.Background())
		require.NoError(t, err)
		require.Equal(t, 200, res.StatusCode)
		held = append(held, d)
	}
	defer func() {
		for _, d := range held {
			_, _ = d.Bye(context.Background())
		}
	}()
	eventually(t, func() bool {
		l := c.app.Dispatcher().Node("fs1").Load()
		return l != nil && l.Sessions >= 80 && l.MaxSessions == 100
	}, "the balancer never saw fs1's load")

	before := [3]int64{}
	for i, n := range c.nodes {
		before[i] = n.Stats().Invites
	}
	cfg := callgen.NewConfig(c.addr("udp"))
	cfg.Calls, cfg.Rate = 300, 150
	rep, err := callgen.Run(context.Background(), cfg)
	require.NoError(t, err)
	require.Zero(t, rep.Failed)
	got := [3]float64{}
	for i, n := range c.nodes {
		got[i] = float64(n.Stats().Invites - before[i])
	}
	idle := (got[1] + got[2]) / 2
	t.Logf("new calls: busy fs1 %v, idle fs2 %v, fs3 %v", got[0], got[1], got[2])
	require.Less(t, got[0], 0.2*idle, "the busy node got %v calls against %v per idle node", got[0], idle)
}

// TestDrainNode: a drained node gets no new calls, its calls finish, and
// its active count falls to 0.
func TestDrainNode(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 2})
	u, err := callgen.NewUAC(callgen.NewConfig(c.addr("udp")))
	require.NoError(t, err)
	defer u.Close()
	var onFS1 *callgen.Dialog
	for onFS1 == nil {
		d, res, err := u.Invite(context.Background())
		require.NoError(t, err)
		require.Equal(t, 200, res.StatusCode)
		if n, _ := c.nodeOf(d.CallID()); n == c.nodes[0] {
			onFS1 = d
		} else {
			_, _ = d.Bye(context.Background())
		}
	}
	fs1 := c.app.Dispatcher().Node("fs1")
	eventually(t, func() bool { return fs1.Active() == 1 }, "active %d", fs1.Active())
	require.NoError(t, c.app.Checker().SetOperator("fs1", health.OperatorDrain))
	require.Equal(t, dispatcher.StateDraining, fs1.State())

	requireNoNewCalls(t, c, c.nodes[0])

	res, err := onFS1.Bye(context.Background())
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	eventually(t, func() bool { return fs1.Active() == 0 }, "active %d after the last BYE", fs1.Active())

	require.NoError(t, c.app.Checker().SetOperator("fs1", health.OperatorNone))
	require.Equal(t, dispatcher.StateUp, fs1.State())
}

// requireNoNewCalls places 20 calls through c, all of which must succeed
// without one reaching n.
func requireNoNewCalls(t *testing.T, c *cluster, n *fsemu.Node) {
	t.Helper()
	before := n.Stats().Invites
	cfg := callgen.NewConfig(c.addr("udp"))
	cfg.Calls, cfg.Rate = 20, 100
	rep, err := callgen.Run(context.Background(), cfg)
	require.NoError(t, err)
	require.Zero(t, rep.Failed)
	require.Equal(t, before, n.Stats().Invites, "%s got new calls", n.ID())
}

// TestDrainSurvivesReload: a node an operator drained stays drained through
// a reload that restarts its monitor (here: its Event Socket password is
// corrected), takes no new call, and returns when the operator enables it.
// The config's own drain flag did not change, so the operator's wish is the
// one in force. (The restarted monitor used to forget the wish and take the
// node for Up while it stayed Draining, so enabling it did nothing.)
func TestDrainSurvivesReload(t *testing.T) {
	const wrong = `, esl_password: "wrong"`
	c := startCluster(t, clusterOpts{nodes: 2, esl: true, nodeYAML: wrong})
	checker := c.app.Checker()
	eventually(t, func() bool {
		st, _ := checker.NodeStatus("fs1")
		return st.ESL != nil && st.ESL.AuthFailed
	}, "the wrong password was not reported")
	require.NoError(t, checker.SetOperator("fs1", health.OperatorDrain))
	fs1 := c.app.Dispatcher().Node("fs1")
	require.Equal(t, dispatcher.StateDraining, fs1.State())

	next, err := config.LoadBytes([]byte(strings.ReplaceAll(c.yaml("127.0.0.1:0"), wrong, `, esl_password: "ClueCon"`)))
	require.NoError(t, err)
	applied, _, err := c.app.Reload(next)
	require.NoError(t, err)
	require.Contains(t, applied, "nodes")
	// The new monitor has logged in and judged the node healthy in every
	// respect: only the operator's drain keeps it out.
	eventually(t, func() bool {
		st, _ := checker.NodeStatus("fs1")
		return st.ESL != nil && st.ESL.Connected && st.ProbeStatus == 200
	}, "fs1's Event Socket did not log in after the reload")
	require.Equal(t, dispatcher.StateDraining, fs1.State())

	requireNoNewCalls(t, c, c.nodes[0])

	require.NoError(t, checker.SetOperator("fs1", health.OperatorNone))
	require.Equal(t, dispatcher.StateUp, fs1.State())
}

// TestProfileDownAndCPUSaturation: a SIP profile that is not RUNNING takes
// the node down; Idle-CPU under the threshold for the configured time makes
// it full; both recover.
func TestProfileDownAndCPUSaturation(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 2, esl: true, yaml: `
health:
  esl: { profile_check: 200ms }
  cpu: { idle_min: 10, for: 1s }
`})
	fs1, node := c.nodes[0], c.app.Dispatcher().Node("fs1")
	eventually(t, func() bool {
		st, _ := c.app.Checker().NodeStatus("fs1")
		return st.ESL != nil && st.ESL.Connected && st.ESL.ProfileKnown
	}, "ESL not connected")

	// The emulator answers 503 to SIP while its profile is down, as
	// FreeSWITCH does; the Event Socket says why.
	fs1.SetOptionsAlways200(true)
	fs1.SetProfileRunning(false)
	eventually(t, func() bool { return node.State() == dispatcher.StateDown }, "profile down not seen")
	st, _ := c.app.Checker().NodeStatus("fs1")
	require.Equal(t, health.ReasonProfileDown, st.Reason)
	fs1.SetProfileRunning(true)
	eventually(t, func() bool { return node.State() == dispatcher.StateUp }, "profile back not seen")

	fs1.SetIdleCPU(3)
	eventually(t, func() bool { return node.State() == dispatcher.StateFull }, "CPU saturation not seen")
	st, _ = c.app.Checker().NodeStatus("fs1")
	require.Equal(t, health.ReasonCPU, st.Reason)
	fs1.SetIdleCPU(90)
	eventually(t, func() bool { return node.State() == dispatcher.StateUp }, "CPU recovery not seen")
}

// TestRingingCallMovesWhenNodeDies: a call ringing on a node that dies
// before answering is CANCELled there and moved to the next node; the
// caller hears ringing again and gets its answer.
func TestRingingCallMovesWhenNodeDies(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 2, node: func(i int, cfg *fsemu.Config) {
		if i == 0 {
			cfg.AnswerDelay = time.Hour // fs1 rings and never answers
		}
	}})
	u, err := callgen.NewUAC(callgen.NewConfig(c.addr("udp")))
	require.NoError(t, err)
	defer u.Close()
	// Round robin starts with fs1: the first call rings there.
	done := make(chan struct{})
	var res *sip.Response
	var d *callgen.Dialog
	go func() {
		defer close(done)
		d, res, err = u.Invite(context.Background(), callgen.WithHeader(sip.NewHeader("X-Test", "ringing")))
	}()
	eventually(t, func() bool { return c.nodes[0].Active() == 1 }, "the call never rang on fs1")
	require.NoError(t, c.nodes[0].Close()) // fs1 dies while ringing
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the ringing call was not moved")
	}
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	n, _ := c.answeredBy(d.CallID())
	require.Equal(t, "fs2", n.ID())
	res, err = d.Bye(context.Background())
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
}

// TestSlowNodeFailsOverWithinInviteTimeout: a node that answers slowly (no
// 18x or final within failover.invite_timeout) loses its calls to the next
// node after that timeout, and no call fails.
func TestSlowNodeFailsOverWithinInviteTimeout(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 2, node: func(i int, cfg *fsemu.Config) {
		if i == 0 {
			cfg.RingDelay = 3 * time.Second // 100 Trying at once, then nothing for 3 s
		}
	}})
	cfg := callgen.NewConfig(c.addr("udp"))
	cfg.Calls, cfg.Rate = 20, 20
	cfg.Timeout = 15 * time.Second
	rep, err := callgen.Run(context.Background(), cfg)
	require.NoError(t, err)
	require.Zero(t, rep.Failed, "%+v", failures(rep))
	moved := 0
	for _, r := range rep.Results {
		n, seen := c.answeredBy(r.CallID)
		require.NotNil(t, n)
		if seen > 1 {
			moved++
			require.Equal(t, "fs2", n.ID())
			// Abandoned after invite_timeout (1 s) — or sooner, once
			// passive failures took the node down — and answered at once
			// by fs2: well under the slow node's 3 s.
			require.Less(t, r.SetupTime, 2500*time.Millisecond, "call %s", r.CallID)
		}
	}
	require.Positive(t, moved, "no call went to the slow node first")
	// The slow node was CANCELled (it had sent 100 Trying): its calls end.
	eventually(t, func() bool { return c.nodes[0].Active() == 0 }, "the slow node keeps %d calls", c.nodes[0].Active())
}
