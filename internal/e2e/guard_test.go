package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/callgen"
	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
	"github.com/sipbalancer/sipbalancer/pkg/guard"
)

// floodINVITEs sends n INVITEs (Call-IDs flood-<i>) from src to target as
// fast as the socket takes them, and returns the datagrams that came back.
func floodINVITEs(t *testing.T, src, target string, n int) []string {
	t.Helper()
	conn, err := net.ListenPacket("udp", src+":0")
	require.NoError(t, err)
	defer conn.Close()
	to, err := net.ResolveUDPAddr("udp", target)
	require.NoError(t, err)
	var got []string
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			k, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			mu.Lock()
			got = append(got, string(buf[:k]))
			mu.Unlock()
		}
	}()
	local := conn.LocalAddr().String()
	for i := 0; i < n; i++ {
		msg := fmt.Sprintf("INVITE sip:1000@%s SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bKflood%d;rport\r\n"+
			"Max-Forwards: 70\r\nFrom: <sip:scanner@%s>;tag=f%d\r\nTo: <sip:1000@%s>\r\nCall-ID: flood-%d\r\n"+
			"CSeq: 1 INVITE\r\nContact: <sip:scanner@%s>\r\nContent-Length: 0\r\n\r\n",
			target, local, i, src, i, target, i, local)
		_, err := conn.WriteTo([]byte(msg), to)
		require.NoError(t, err)
	}
	<-done
	mu.Lock()
	defer mu.Unlock()
	return got
}

// TestUntrustedSourceNeverReachesNodes: with trunks configured, a source
// outside them floods INVITEs while a trunk places calls: none of the
// flood reaches a node, every trunk call completes. Dropped silently (the
// default: scanners learn nothing) and rejected with 403.
func TestUntrustedSourceNeverReachesNodes(t *testing.T) {
	for _, mode := range []string{"drop", "reject"} {
		t.Run(mode, func(t *testing.T) {
			c := startCluster(t, clusterOpts{nodes: 2, yaml: fmt.Sprintf(`
trunks:
  - { name: carrier, sources: ["127.0.0.1/32"] }
security:
  untrusted: %s
`, mode)})
			var wg sync.WaitGroup
			var rep *callgen.Report
			wg.Add(1)
			go func() {
				defer wg.Done()
				cfg := callgen.NewConfig(c.addr("udp"))
				cfg.Calls, cfg.Rate = 100, 50
				cfg.Timeout = 10 * time.Second
				var err error
				rep, err = callgen.Run(context.Background(), cfg)
				require.NoError(t, err)
			}()
			answers := floodINVITEs(t, "127.0.0.99", c.addr("udp"), 3000)
			wg.Wait()
			require.Zero(t, rep.Failed, "trunk calls failed: %+v", failures(rep))

			for _, n := range c.nodes {
				for _, rec := range n.Calls() {
					require.False(t, strings.HasPrefix(rec.CallID, "flood-"), "%s reached %s", rec.CallID, n.ID())
				}
			}
			st := c.app.Guard().Stats()
			require.Positive(t, st.Get(guard.ReasonUntrusted), "no refusal counted")
			switch mode {
			case "drop":
				require.Empty(t, answers, "a dropped source got answers")
			case "reject":
				require.NotEmpty(t, answers)
				for _, a := range answers {
					require.True(t, strings.HasPrefix(a, "SIP/2.0 403"), "answer %q", firstLine(a))
				}
			}
		})
	}
}

func headerValue(msg, name string) string {
	for _, l := range strings.Split(msg, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func firstLine(s string) string {
	if i := strings.Index(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}

// TestRateLimitPerSource: a source over its new-call rate gets 503 with
// Retry-After; another source at the same time is not affected.
func TestRateLimitPerSource(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 2, yaml: `
limits:
  per_source: { invite_rate: 2, invite_burst: 5 }
`})
	answers := floodINVITEs(t, "127.0.0.98", c.addr("udp"), 40)
	// Final answers by Call-ID (UDP finals are retransmitted until ACKed,
	// and the flood never ACKs).
	final := map[string]string{}
	for _, a := range answers {
		if strings.HasPrefix(a, "SIP/2.0 1") {
			continue
		}
		id := headerValue(a, "Call-ID")
		final[id] = firstLine(a)
		if strings.HasPrefix(a, "SIP/2.0 503") {
			require.Contains(t, a, "Retry-After:")
		}
	}
	var ok, limited int
	for _, l := range final {
		switch {
		case strings.HasPrefix(l, "SIP/2.0 503"):
			limited++
		case strings.HasPrefix(l, "SIP/2.0 200"):
			ok++
		}
	}
	require.Equal(t, 40, ok+limited, "every INVITE got a final answer: %v", final)
	require.GreaterOrEqual(t, limited, 30, "over the rate: 503")
	require.LessOrEqual(t, ok, 10, "at most the burst and the refill go through")

	cfg := callgen.NewConfig(c.addr("udp"))
	cfg.Calls, cfg.Rate = 2, 1
	rep, err := callgen.Run(context.Background(), cfg)
	require.NoError(t, err)
	require.Zero(t, rep.Failed, "another source was limited: %+v", failures(rep))
}

// TestHideTopology: with security.hide_topology the carrier never sees a
// node's address in the node's Contact; its in-dialog requests, sent to
// the Contact the balancer put there, still reach the node; and the node's
// own BYE reaches the carrier.
func TestHideTopology(t *testing.T) {
	c := startCluster(t, clusterOpts{nodes: 2, yaml: "security: { hide_topology: true }\n",
		node: func(_ int, cfg *fsemu.Config) { cfg.HoldTime = 300 * time.Millisecond }})
	u, err := callgen.NewUAC(callgen.NewConfig(c.addr("udp")))
	require.NoError(t, err)
	defer u.Close()
	d, res, err := u.Invite(context.Background())
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	// (The SDP names the node's media address: media flows to the node.)
	require.NotContains(t, sipHeaders(res.String()), "127.0.1.", "a node address reached the carrier:\n%s", res.String())
	require.Contains(t, d.RemoteTarget(), c.addr("udp"))

	// A re-INVITE to the hidden Contact reaches the node.
	res, err = d.Request(context.Background(), sip.INVITE, nil)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	require.NotContains(t, sipHeaders(res.String()), "127.0.1.")
	c.waitRecord(d.CallID(), func(r fsemu.CallRecord) bool { return isSubsequence([]string{"INVITE", "ACK", "INVITE"}, r.Methods) })

	// The node hangs up; its BYE reaches the carrier.
	select {
	case <-d.RemoteBye():
	case <-time.After(10 * time.Second):
		t.Fatal("the node's BYE never reached the carrier")
	}
}

func sipHeaders(msg string) string {
	h, _, _ := strings.Cut(msg, "\r\n\r\n")
	return h
}
