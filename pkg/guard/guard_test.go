package guard

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newGuard(t *testing.T, untrusted, rate Action) (*Guard, *clock) {
	t.Helper()
	clk := &clock{t: t0}
	g, err := New(Config{
		Trunks: []Trunk{
			{Name: "carrier", CIDRs: prefixes(t, "192.0.2.0/24")},
			{Name: "shared", CIDRs: prefixes(t, "198.51.100.0/24"), RequestURIHost: "pbx.example.com"},
			{Name: "big", CIDRs: prefixes(t, "203.0.113.0/24"), ExemptFromRateLimits: true},
		},
		Nodes:      []netip.Addr{addr("10.0.0.11")},
		Untrusted:  untrusted,
		RateAction: rate,
		Limits: LimiterConfig{InviteRate: 1, InviteBurst: 2, RequestRate: 100, RequestBurst: 5,
			GlobalInviteRate: 1, GlobalInviteBurst: 4, MaxSources: 64},
		Message: testLimits,
		Now:     clk.now,
	})
	require.NoError(t, err)
	return g, clk
}

func udpFrom(ip string) net.Addr {
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr(ip), 5060))
}

var (
	newInvite = crlf(invite)
	reInvite  = crlf(strings.Replace(invite, "pbx.example.com>\n", "pbx.example.com>;tag=9\n", 1))
	ok200     = crlf("SIP/2.0 200 OK\nVia: SIP/2.0/UDP x;branch=z9hG4bK1\nTo: <sip:a@b>;tag=1\nContent-Length: 0\n\n")
)

func TestFilterACL(t *testing.T) {
	for _, mode := range []Action{Drop, Reply} {
		g, _ := newGuard(t, mode, Reply)
		filter := g.ReadFilter()
		assert.NotNil(t, filter("UDP", udpFrom("192.0.2.7"), newInvite), "trunk")
		assert.NotNil(t, filter("UDP", udpFrom("198.51.100.7"), newInvite), "conditional trunk: decided after parsing")
		assert.NotNil(t, filter("UDP", udpFrom("10.0.0.11"), ok200), "node")
		assert.Nil(t, filter("UDP", udpFrom("172.16.1.1"), ok200), "a response from outside is always dropped")
		assert.Nil(t, filter("UDP", udpFrom("172.16.1.1"), []byte("\r\n\r\n")), "and a keep-alive")
		got := filter("UDP", udpFrom("172.16.1.1"), newInvite)
		if mode == Drop {
			assert.Nil(t, got, "untrusted request, drop mode")
			assert.Equal(t, uint64(3), g.Stats().Get(ReasonUntrusted))
		} else {
			assert.NotNil(t, got, "untrusted request, reject mode: Admit answers 403")
			assert.Equal(t, uint64(2), g.Stats().Get(ReasonUntrusted))
		}
		assert.Equal(t, string(newInvite), string(filter("TCP", udpFrom("172.16.1.1"), newInvite)), "TCP is the listener's")
	}
}

func TestFilterLimits(t *testing.T) {
	g, _ := newGuard(t, Drop, Reply)
	filter := g.ReadFilter()
	assert.Nil(t, filter("UDP", udpFrom("192.0.2.7"), crlf(withHeader(invite, manyVias(9)))))
	assert.Nil(t, filter("UDP", udpFrom("10.0.0.11"), crlf(withHeader(invite, manyHeaders(40)))), "nodes too")
	assert.Equal(t, uint64(1), g.Stats().Get(ReasonTooManyVias))
	assert.Equal(t, uint64(1), g.Stats().Get(ReasonTooManyHeaders))
}

func TestFilterRateDrop(t *testing.T) {
	g, clk := newGuard(t, Drop, Drop)
	filter := g.ReadFilter()
	src := udpFrom("192.0.2.7")
	assert.NotNil(t, filter("UDP", src, newInvite))
	assert.NotNil(t, filter("UDP", src, newInvite))
	assert.Nil(t, filter("UDP", src, newInvite), "over the source's invite burst")
	assert.NotNil(t, filter("UDP", src, reInvite), "a re-INVITE is no new call")
	assert.NotNil(t, filter("UDP", src, ok200), "responses are not rate limited")
	assert.Equal(t, uint64(1), g.Stats().Get(ReasonRateSource))
	// The exempt trunk skips its source buckets but not the global cap
	// (4, of which 2 are gone).
	big := udpFrom("203.0.113.9")
	assert.NotNil(t, filter("UDP", big, newInvite))
	assert.NotNil(t, filter("UDP", big, newInvite))
	assert.Nil(t, filter("UDP", big, newInvite))
	assert.Equal(t, uint64(1), g.Stats().Get(ReasonRateGlobal))
	for range 20 {
		assert.NotNil(t, filter("UDP", udpFrom("10.0.0.11"), newInvite), "nodes are never limited")
	}
	clk.t = clk.t.Add(time.Second)
	assert.NotNil(t, filter("UDP", src, newInvite))

	// A UDP request that passed the filter is not counted again.
	d := g.Admit(Request{Source: addr("192.0.2.7"), Transport: "UDP", Method: "INVITE"})
	assert.True(t, d.Admitted())
	assert.Equal(t, "carrier", d.Trunk)
}

func TestFilterRateReplyLeavesItToAdmit(t *testing.T) {
	g, _ := newGuard(t, Drop, Reply)
	filter := g.ReadFilter()
	for range 10 {
		require.NotNil(t, filter("UDP", udpFrom("192.0.2.7"), newInvite))
	}
	assert.Zero(t, g.Stats().Get(ReasonRateSource))
}

func TestAdmit(t *testing.T) {
	inv := func(src, ruri string) Request {
		return Request{Source: addr(src), Transport: "UDP", Method: "INVITE", RequestURIHost: ruri}
	}
	tests := []struct {
		name      string
		untrusted Action
		rate      Action
		reqs      []Request
		want      Decision // for the last request
	}{
		{"trunk", Drop, Reply, []Request{inv("192.0.2.7", "x")}, Decision{Trunk: "carrier"}},
		{"node", Drop, Reply, []Request{inv("10.0.0.11", "x")}, Decision{Node: true}},
		{"untrusted, reject", Reply, Reply, []Request{inv("172.16.1.1", "x")}, Decision{Reason: ReasonUntrusted, Code: 403}},
		{"untrusted, drop", Drop, Reply, []Request{inv("172.16.1.1", "x")}, Decision{Reason: ReasonUntrusted}},
		{"untrusted ACK is never answered", Reply, Reply, []Request{{Source: addr("172.16.1.1"), Method: "ACK", InDialog: true}},
			Decision{Reason: ReasonUntrusted}},
		{"R-URI condition met", Reply, Reply, []Request{inv("198.51.100.5", "PBX.example.com")}, Decision{Trunk: "shared"}},
		{"R-URI condition not met", Reply, Reply, []Request{inv("198.51.100.5", "elsewhere.example.com")}, Decision{Reason: ReasonUntrusted, Code: 403}},
		{"in-dialog: source only", Reply, Reply, []Request{{Source: addr("198.51.100.5"), Method: "BYE", InDialog: true, RequestURIHost: "10.0.0.11"}},
			Decision{}},
		{"CANCEL: source only", Reply, Reply, []Request{{Source: addr("198.51.100.5"), Method: "CANCEL", RequestURIHost: "x"}}, Decision{}},
		{"rate, reply", Drop, Reply, []Request{inv("192.0.2.7", ""), inv("192.0.2.7", ""), inv("192.0.2.7", "")},
			Decision{Reason: ReasonRateSource, Code: 503, Trunk: "carrier"}},
		{"rate, drop", Drop, Drop, []Request{inv("192.0.2.7", ""), inv("192.0.2.7", ""), inv("192.0.2.7", "")},
			Decision{Reason: ReasonRateSource, Trunk: "carrier"}},
		{"rate, ACK never answered", Drop, Reply, []Request{
			{Source: addr("192.0.2.7"), Method: "ACK"}, {Source: addr("192.0.2.7"), Method: "ACK"}, {Source: addr("192.0.2.7"), Method: "ACK"},
			{Source: addr("192.0.2.7"), Method: "ACK"}, {Source: addr("192.0.2.7"), Method: "ACK"}, {Source: addr("192.0.2.7"), Method: "ACK"},
		}, Decision{Reason: ReasonRateSource}},
		{"exempt trunk under the global cap", Drop, Reply, []Request{
			inv("203.0.113.1", ""), inv("203.0.113.1", ""), inv("203.0.113.1", ""), inv("203.0.113.1", ""), inv("203.0.113.1", ""),
		}, Decision{Reason: ReasonRateGlobal, Code: 503, Trunk: "big"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, _ := newGuard(t, tt.untrusted, tt.rate)
			var d Decision
			for _, r := range tt.reqs {
				d = g.Admit(r)
			}
			assert.Equal(t, tt.want, d)
			if d.Reason != ReasonNone {
				assert.Equal(t, uint64(1), g.Stats().Get(d.Reason))
			}
		})
	}
}

func TestAdmitOpenACL(t *testing.T) {
	g, err := New(Config{Limits: LimiterConfig{InviteRate: 1, InviteBurst: 1, MaxSources: 8}, RateAction: Reply})
	require.NoError(t, err)
	assert.True(t, g.ACL().Open())
	r := Request{Source: addr("172.16.1.1"), Transport: "TCP", Method: "INVITE"}
	assert.True(t, g.Admit(r).Admitted(), "no trunks: everyone")
	assert.Equal(t, Decision{Reason: ReasonRateSource, Code: 503}, g.Admit(r), "but under the rate limits")
	r.InDialog = true
	assert.True(t, g.Admit(r).Admitted(), "re-INVITEs draw on the request bucket only (off)")
}

func TestSetTrunks(t *testing.T) {
	g, _ := newGuard(t, Reply, Reply)
	r := Request{Source: addr("172.16.1.1"), Transport: "UDP", Method: "OPTIONS"}
	assert.False(t, g.Admit(r).Admitted())
	require.NoError(t, g.SetTrunks([]Trunk{{Name: "new", CIDRs: prefixes(t, "172.16.0.0/12")}}, nil))
	assert.Equal(t, Decision{Trunk: "new"}, g.Admit(r))
	assert.Error(t, g.SetTrunks([]Trunk{{Name: "bad"}}, nil))
	assert.Equal(t, "new", g.Admit(r).Trunk, "a failed swap keeps the ACL in force")
}

func TestGuardListener(t *testing.T) {
	g, err := New(Config{
		Trunks:    []Trunk{{Name: "local", CIDRs: prefixes(t, "127.0.0.2/32")}},
		Untrusted: Drop,
		TCP:       TCPLimits{MaxPerSource: 1},
	})
	require.NoError(t, err)
	ln := g.Listener(listen(t))
	serve(t, ln)
	assert.True(t, closedByPeer(t, dialFrom(t, ln.Addr().String(), "127.0.0.1"), 5*time.Second), "untrusted source refused at accept")
	assert.False(t, closedByPeer(t, dialFrom(t, ln.Addr().String(), "127.0.0.2"), 100*time.Millisecond))
	require.Eventually(t, func() bool { return ln.Active() == 1 }, 5*time.Second, 5*time.Millisecond)
	assert.True(t, closedByPeer(t, dialFrom(t, ln.Addr().String(), "127.0.0.2"), 5*time.Second))
	s := g.Stats()
	assert.Equal(t, uint64(1), s.Get(ReasonUntrusted))
	assert.Equal(t, uint64(1), s.Get(ReasonTCPLimit))

	// With reject, untrusted connections are let in: their requests get 403.
	g2, err := New(Config{Trunks: []Trunk{{Name: "local", CIDRs: prefixes(t, "127.0.0.2/32")}}, Untrusted: Reply})
	require.NoError(t, err)
	ln2 := g2.Listener(listen(t))
	serve(t, ln2)
	assert.False(t, closedByPeer(t, dialFrom(t, ln2.Addr().String(), "127.0.0.1"), 100*time.Millisecond))
}

func TestOnReject(t *testing.T) {
	var got []Reason
	g, err := New(Config{
		Trunks:   []Trunk{{Name: "a", CIDRs: prefixes(t, "192.0.2.0/24")}},
		Message:  testLimits,
		OnReject: func(r Reason) { got = append(got, r) },
	})
	require.NoError(t, err)
	filter := g.ReadFilter()
	filter("UDP", udpFrom("172.16.0.1"), newInvite)
	filter("UDP", udpFrom("192.0.2.1"), crlf(withHeader(invite, manyVias(9))))
	g.Admit(Request{Source: addr("172.16.0.1"), Transport: "TCP", Method: "BYE", InDialog: true})
	assert.Equal(t, []Reason{ReasonUntrusted, ReasonTooManyVias, ReasonUntrusted}, got)
	assert.Equal(t, uint64(2), g.Stats().Get(ReasonUntrusted))
}

func TestStatsLabels(t *testing.T) {
	want := []string{"none", "untrusted", "rate_source", "rate_global", "too_large", "too_many_headers",
		"header_too_long", "too_many_vias", "bad_framing", "tcp_limit", "tcp_timeout"}
	require.Len(t, want, int(NumReasons))
	for i, w := range want {
		assert.Equal(t, w, Reason(i).String())
	}
	assert.Equal(t, "unknown", NumReasons.String())
	var c Counters
	c.Add(ReasonNone)
	c.Add(ReasonTooLarge)
	c.Add(ReasonTooLarge)
	assert.Equal(t, uint64(2), c.Stats().Get(ReasonTooLarge))
	assert.Zero(t, c.Stats().Get(ReasonNone))
}

func TestFilterNoAllocs(t *testing.T) {
	g, _ := newGuard(t, Drop, Drop)
	filter := g.ReadFilter()
	src := udpFrom("203.0.113.9") // exempt: never refused by a bucket
	assert.Zero(t, testing.AllocsPerRun(100, func() { filter("UDP", src, reInvite) }))
	g2, _ := newGuard(t, Drop, Drop)
	r := Request{Source: addr("198.51.100.5"), Transport: "TCP", Method: "INVITE", InDialog: true}
	assert.Zero(t, testing.AllocsPerRun(100, func() { g2.Admit(r) }))
}
