// Package e2e runs the real balancer (the same wiring as cmd/sipbalancer)
// in front of real emulated FreeSWITCH nodes, with real SIP over loopback
// sockets, and checks what the nodes themselves recorded.
//
// Nodes listen on their own loopback addresses (127.0.1.x) and callers on
// 127.0.0.1, as carriers and FreeSWITCH nodes live on different hosts.
package e2e

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/sipbalancer/sipbalancer/internal/app"
	"github.com/sipbalancer/sipbalancer/pkg/config"
	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

func TestMain(m *testing.M) {
	// sipgo logs through one package-wide logger; keep test output readable.
	sip.SetDefaultLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}

// cluster is a balancer with its nodes.
type cluster struct {
	t   testing.TB
	app *app.App
	// yaml builds an instance's configuration for a UDP listen address.
	yaml  func(listenUDP string) string
	nodes []*fsemu.Node
	// ids maps node address to node id.
	ids map[string]string
	// overloadLatency is limits.overload_latency for every instance.
	overloadLatency time.Duration
}

type clusterOpts struct {
	nodes int
	// node tweaks the config of node i (0-based) before it starts.
	node func(i int, c *fsemu.Config)
	// extraNodes are configured in the balancer but not started
	// (address -> id).
	extraNodes map[string]string
	// yaml is appended to the generated configuration.
	yaml string
	// policy defaults to weighted_round_robin (deterministic spread).
	policy string
	// nodeTransport is "udp" (default) or "tcp".
	nodeTransport string
	// listenUDP is the balancer's UDP address (default 127.0.0.1:0).
	listenUDP string
	// esl gives every node an Event Socket (1 s HEARTBEAT) that the
	// balancer uses.
	esl bool
	// nodeYAML is appended to every node's entry, e.g. ", max_calls: 10".
	nodeYAML string
	// extraYAMLNodes are node entries added verbatim (subprocess nodes).
	extraYAMLNodes []string
	// session holds extra keys of the session section, indented two
	// spaces (e.g. "  store: redis\n").
	session string
	// overloadLatency is limits.overload_latency. Default 0 (off), unlike
	// the product's default: a test about something else must not shed
	// calls because the machine running it is busy.
	overloadLatency time.Duration
}

// startCluster starts opts.nodes fsemu nodes on 127.0.1.(i+1) and the
// balancer on 127.0.0.1 (UDP and TCP, free ports).
func startCluster(t testing.TB, opts clusterOpts) *cluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := &cluster{t: t, ids: map[string]string{}, overloadLatency: opts.overloadLatency}
	var nodesYAML strings.Builder
	for i := 0; i < opts.nodes; i++ {
		cfg := fsemu.Config{
			ID:     fmt.Sprintf("fs%d", i+1),
			Listen: fmt.Sprintf("127.0.1.%d:0", i+1),
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		}
		if opts.esl {
			cfg.ESLAddr = fmt.Sprintf("127.0.1.%d:0", i+1)
			cfg.HeartbeatInterval = time.Second
		}
		if opts.node != nil {
			opts.node(i, &cfg)
		}
		n, err := fsemu.Start(ctx, cfg)
		require.NoError(t, err)
		t.Cleanup(func() { n.Close() })
		c.nodes = append(c.nodes, n)
		c.ids[n.Addr()] = cfg.ID
		sipAddr := n.Addr()
		if opts.nodeTransport == "tcp" {
			sipAddr = "sip:" + n.Addr() + ";transport=tcp"
		}
		esl := ""
		if n.ESLAddr() != "" {
			esl = fmt.Sprintf(", esl: %q", n.ESLAddr())
		}
		fmt.Fprintf(&nodesYAML, "  - { id: %s, sip: %q%s%s }\n", cfg.ID, sipAddr, esl, opts.nodeYAML)
	}
	for _, e := range opts.extraYAMLNodes {
		fmt.Fprintf(&nodesYAML, "  - %s\n", e)
	}
	for addr, id := range opts.extraNodes {
		fmt.Fprintf(&nodesYAML, "  - { id: %s, sip: %q%s }\n", id, addr, opts.nodeYAML)
		c.ids[addr] = id
	}
	policy := opts.policy
	if policy == "" {
		policy = "weighted_round_robin"
	}
	listenUDP := opts.listenUDP
	if listenUDP == "" {
		listenUDP = "127.0.0.1:0"
	}
	c.yaml = func(listenUDP string) string {
		return fmt.Sprintf(`
sip:
  listen: ["udp://%s", "tcp://127.0.0.1:0"]
nodes:
%s
dispatcher:
  policy: %s
failover:
  invite_timeout: 1s
session:
  token_secret: e2e-secret
%s
admin:
  listen: ""
%s
`, listenUDP, nodesYAML.String(), policy, opts.session, opts.yaml)
	}
	c.app = c.instance(listenUDP)
	return c
}

// instance starts another balancer with the cluster's configuration (same
// nodes, same token secret, same store) on listenUDP.
func (c *cluster) instance(listenUDP string) *app.App {
	t := c.t
	t.Helper()
	yaml := c.yaml(listenUDP)
	cfg, err := config.LoadBytes([]byte(yaml))
	require.NoError(t, err, yaml)
	cfg.Limits.OverloadLatency = c.overloadLatency
	a, err := app.New(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	require.NoError(t, err)
	require.NoError(t, a.Start())
	t.Cleanup(func() { a.Close() })
	return a
}

// addr is the balancer's address for transport ("udp" or "tcp").
func (c *cluster) addr(transport string) string {
	return c.app.Proxy().Addr(transport)
}

// nodeOf returns the node that recorded callID, and fails the test if more
// than one did.
func (c *cluster) nodeOf(callID string) (*fsemu.Node, fsemu.CallRecord) {
	c.t.Helper()
	var owner *fsemu.Node
	var rec fsemu.CallRecord
	for _, n := range c.nodes {
		if r, ok := n.Call(callID); ok {
			if owner != nil {
				require.FailNow(c.t, "call reached two nodes", "call %s: %s and %s", callID, owner.ID(), n.ID())
			}
			owner, rec = n, r
		}
	}
	return owner, rec
}

// answeredBy returns the node that answered callID (a call tried on several
// nodes by failover is recorded on each of them) and how many nodes saw it.
func (c *cluster) answeredBy(callID string) (answered *fsemu.Node, seen int) {
	for _, n := range c.nodes {
		if r, ok := n.Call(callID); ok {
			seen++
			if r.Answered {
				require.Nil(c.t, answered, "call %s answered twice", callID)
				answered = n
			}
		}
	}
	return answered, seen
}

// freeUDPAddr returns a loopback UDP address nothing listens on.
func freeUDPAddr(t testing.TB, ip string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", ip+":0")
	require.NoError(t, err)
	addr := pc.LocalAddr().String()
	require.NoError(t, pc.Close())
	return addr
}

// eventually polls cond with a generous deadline (behaviour, not timing).
func eventually(t testing.TB, cond func() bool, msg string, args ...any) {
	t.Helper()
	require.Eventually(t, cond, 20*time.Second, 20*time.Millisecond, fmt.Sprintf(msg, args...))
}

// options sends an out-of-dialog OPTIONS to target and returns the status.
func options(t *testing.T, target string) int {
	t.Helper()
	ua, err := sipgo.NewUA()
	require.NoError(t, err)
	defer ua.Close()
	cl, err := sipgo.NewClient(ua, sipgo.WithClientHostname("127.0.0.1"))
	require.NoError(t, err)
	host, port, err := sip.ParseAddr(target)
	require.NoError(t, err)
	req := sip.NewRequest(sip.OPTIONS, sip.Uri{Scheme: "sip", Host: host, Port: port})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := cl.Do(ctx, req)
	require.NoError(t, err)
	return res.StatusCode
}

// waitRecord waits until the node that recorded callID shows cond: nodes
// record requests beside handling them, so a record may trail the answer
// the caller already has by a moment.
func (c *cluster) waitRecord(callID string, cond func(fsemu.CallRecord) bool) fsemu.CallRecord {
	c.t.Helper()
	var rec fsemu.CallRecord
	eventually(c.t, func() bool {
		var n *fsemu.Node
		n, rec = c.nodeOf(callID)
		return n != nil && cond(rec)
	}, "call %s: record %+v", callID, &rec)
	return rec
}
