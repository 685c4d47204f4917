package health

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

func startFsemu(t *testing.T, cfg fsemu.Config) *fsemu.Node {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := fsemu.Start(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	return n
}

func mediaProber(t *testing.T, addr string, uri string) *MediaProber {
	t.Helper()
	ap := netip.MustParseAddrPort(addr)
	if uri == "" {
		uri = mediaURI("sip:echo@{node}", "", ap.Addr().String(), ap.Port())
	}
	p := &MediaProber{
		NodeID: "fs1", Target: ap, Transport: "UDP", URI: uri,
		Codec: "PCMU", Duration: 200 * time.Millisecond, Timeout: 2 * time.Second,
	}
	t.Cleanup(p.Close)
	return p
}

// TestMediaProbeFsemu probes the emulator's echo extension: the media comes
// back, then, with the echo off, it does not; either way the call is
// answered and hung up, and nothing is left up on the node.
func TestMediaProbeFsemu(t *testing.T) {
	n := startFsemu(t, fsemu.Config{ID: "fs1"})
	p := mediaProber(t, n.Addr(), "")

	r := p.Probe(t.Context())
	require.NoError(t, r.Err)
	assert.Equal(t, MediaOK, r.Class(0.2), "%+v", r)
	assert.Equal(t, 200, r.Status)
	assert.GreaterOrEqual(t, r.Sent, int64(5), "200 ms at 20 ms (fewer only if the machine stalled)")
	assert.Equal(t, r.Sent, r.Echoed)
	assert.Zero(t, r.Loss)
	assert.Positive(t, r.RTT)
	assert.False(t, r.At.IsZero())
	assert.Zero(t, n.Active(), "the probe call was hung up")

	n.SetEchoEnabled(false)
	r = p.Probe(t.Context())
	require.NoError(t, r.Err)
	assert.Equal(t, MediaNone, r.Class(0.2), "%+v", r)
	assert.Equal(t, 1.0, r.Loss)
	assert.Zero(t, n.Active())

	n.SetEchoEnabled(true)
	assert.Equal(t, MediaOK, p.Probe(t.Context()).Class(0.2))

	calls := n.Calls()
	require.Len(t, calls, 3)
	for _, c := range calls {
		assert.True(t, c.Echo)
		assert.Equal(t, fsemu.EndCallerBye, c.EndReason, "every probe call ended by our BYE")
		assert.Equal(t, []string{"INVITE", "ACK", "BYE"}, c.Methods)
	}
}

// TestMediaProbeRefused: an INVITE answered with an error says nothing
// about media; the request carries the probe's marking header.
func TestMediaProbeRefused(t *testing.T) {
	got := make(chan *sip.Request, 1)
	addr := refusingUAS(t, got)
	p := mediaProber(t, addr, "sip:9196@"+addr)
	p.Codec = "PCMA"
	r := p.Probe(t.Context())
	assert.Equal(t, 486, r.Status)
	assert.Equal(t, MediaError, r.Class(0.2))
	require.Error(t, r.Err)
	assert.Contains(t, r.Err.Error(), "486")

	inv := <-got
	assert.Equal(t, "media", header(inv, ProbeHeader))
	assert.Equal(t, "sipbalancer", header(inv, "User-Agent"))
	assert.Equal(t, "9196", inv.Recipient.User)
	assert.Contains(t, string(inv.Body()), "RTP/AVP 8 0 101", "the configured codec first")
}

// TestMediaProbeNoNode: nothing answers; the probe ends within its bounds.
func TestMediaProbeNoNode(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { pc.Close() }) // silent: takes datagrams, answers none
	p := mediaProber(t, pc.LocalAddr().String(), "")
	p.Timeout = 300 * time.Millisecond
	start := time.Now()
	r := p.Probe(t.Context())
	assert.Less(t, time.Since(start), 2*p.Timeout+p.Duration+time.Second+time.Second)
	assert.Equal(t, MediaError, r.Class(0.2))
	assert.Error(t, r.Err)
}

func TestMediaProbeTLS(t *testing.T) {
	p := mediaProber(t, "127.0.0.1:5061", "")
	p.Transport = "TLS"
	r := p.Probe(t.Context())
	assert.ErrorIs(t, r.Err, ErrMediaTLS)
	assert.Equal(t, MediaError, r.Class(0.2))
}

// TestCheckerMedia runs the checker's media probe against an emulated node
// whose echo stops: the node goes down with reason media within interval
// × threshold, and comes back when the echo resumes.
func TestCheckerMedia(t *testing.T) {
	n := startFsemu(t, fsemu.Config{ID: "fs1"})
	d, err := dispatcher.New(mustPolicy(t), []dispatcher.Spec{{
		ID: "fs1", Host: "127.0.0.1", Addr: netip.MustParseAddrPort(n.Addr()), Transport: "UDP", Weight: 1,
	}})
	require.NoError(t, err)
	const interval, threshold = 300 * time.Millisecond, 2
	c := NewChecker(d, Config{
		Interval: 200 * time.Millisecond, Timeout: 100 * time.Millisecond, Fall: 2, Rise: 2,
		AliveCodes: []string{"2xx"}, PassiveFailures: 3, Cooldown: time.Second, FullHold: time.Second,
		Media: MediaConfig{
			Enabled: true, Interval: interval, Target: "sip:echo@{node}", Duration: 100 * time.Millisecond,
			Timeout: 2 * time.Second, Codec: "PCMU", MaxLoss: 0.2, Threshold: threshold, Rise: 2,
		},
	}, nil)
	changes := make(chan Change, 16)
	c.OnChange(func(ch Change) { changes <- ch })
	ctx, cancel := context.WithCancel(t.Context())
	c.Start(ctx, []NodeConfig{{ID: "fs1"}})
	t.Cleanup(func() { cancel(); c.Stop() })

	waitStatus(t, c, "a good media probe", func(st NodeStatus) bool {
		return st.Media != nil && st.Media.Result == "ok" && st.Media.Probes["ok"] >= 1
	})
	require.Equal(t, dispatcher.StateUp, d.Node("fs1").State())

	n.SetEchoEnabled(false)
	off := time.Now()
	ch := nextChange(t, changes)
	assert.Equal(t, dispatcher.StateDown, ch.To)
	assert.Equal(t, ReasonMedia, ch.Reason)
	// The probe in flight when the echo stopped may have passed; then
	// threshold more probes, each started interval after the last.
	assert.LessOrEqual(t, ch.At.Sub(off), interval*threshold+time.Second, "down within interval × threshold")
	// The status is published just after the change is announced.
	waitStatus(t, c, "media down in the status", func(st NodeStatus) bool { return st.Media != nil && st.Media.Down })
	st, _ := c.NodeStatus("fs1")
	assert.Equal(t, "no_rtp", st.Media.Result)
	assert.Equal(t, 1.0, st.Media.Loss)

	n.SetEchoEnabled(true)
	ch = nextChange(t, changes)
	assert.Equal(t, dispatcher.StateUp, ch.To)
	waitStatus(t, c, "media up in the status", func(st NodeStatus) bool { return st.Media != nil && !st.Media.Down })
	st, _ = c.NodeStatus("fs1")
	assert.Zero(t, st.Media.Loss)
	assert.Positive(t, st.Media.RTT)
	assert.GreaterOrEqual(t, st.Media.Probes["no_rtp"], uint64(threshold))
}

func nextChange(t *testing.T, ch <-chan Change) Change {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(20 * time.Second):
		t.Fatal("no state change")
	}
	return Change{}
}

func waitStatus(t *testing.T, c *Checker, what string, cond func(NodeStatus) bool) {
	t.Helper()
	require.Eventually(t, func() bool {
		st, ok := c.NodeStatus("fs1")
		return ok && cond(st)
	}, 20*time.Second, 10*time.Millisecond, what)
}

func mustPolicy(t *testing.T) dispatcher.Policy {
	t.Helper()
	p, err := dispatcher.NewPolicy("weighted_round_robin")
	require.NoError(t, err)
	return p
}

func header(req *sip.Request, name string) string {
	if h := req.GetHeader(name); h != nil {
		return h.Value()
	}
	return ""
}

// refusingUAS answers every INVITE 486 and hands it to got.
func refusingUAS(t *testing.T, got chan<- *sip.Request) string {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)))
	require.NoError(t, err)
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(quiet))
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		select {
		case got <- req:
		default:
		}
		_ = tx.Respond(sip.NewResponseFromRequest(req, 486, "Busy Here", nil))
	})
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ServeUDP(pc) }()
	t.Cleanup(func() {
		pc.Close()
		ua.Close()
		<-done
	})
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
}
