package guard_test

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/sipbalancer/sipbalancer/pkg/config"
	"github.com/sipbalancer/sipbalancer/pkg/guard"
)

// fromConfig is the conversion internal/app needs (see the package doc).
func fromConfig(cfg *config.Config, nodeIPs []netip.Addr, onReject func(guard.Reason)) (*guard.Guard, error) {
	trunks := make([]guard.Trunk, len(cfg.Trunks))
	for i, t := range cfg.Trunks {
		cidrs, err := t.Prefixes()
		if err != nil {
			return nil, fmt.Errorf("trunks[%d].sources: %w", i, err)
		}
		trunks[i] = guard.Trunk{Name: t.Name, CIDRs: cidrs, RequestURIHost: t.RequestURIHost,
			Header: t.Header.Name, HeaderValue: t.Header.Value, ExemptFromRateLimits: t.ExemptFromRateLimits}
	}
	action := func(reply bool) guard.Action {
		if reply {
			return guard.Reply
		}
		return guard.Drop
	}
	ps, gl := cfg.Limits.PerSource, cfg.Limits.Global
	return guard.New(guard.Config{
		Trunks:     trunks,
		Nodes:      nodeIPs,
		Untrusted:  action(cfg.Security.Untrusted == config.UntrustedReject),
		RateAction: action(cfg.Limits.Action == config.LimitReply503),
		Limits: guard.LimiterConfig{
			InviteRate: ps.InviteRate, InviteBurst: ps.InviteBurst,
			RequestRate: ps.RequestRate, RequestBurst: ps.RequestBurst, MaxSources: ps.MaxSources,
			GlobalInviteRate: gl.InviteRate, GlobalInviteBurst: gl.InviteBurst,
		},
		Message:  guard.MessageLimits(cfg.Limits.Message),
		TCP:      guard.TCPLimits(cfg.Limits.TCP),
		OnReject: onReject,
	})
}

// Example shows the guard built from a configuration and the three places
// it acts: the UDP read filter, the TCP listener and the request handler.
func Example() {
	cfg, err := config.LoadBytes([]byte(`
nodes: [{id: fs1, sip: "10.0.0.11:5060"}]
trunks: [{name: carrier-a, sources: ["192.0.2.0/24"]}]
security: {untrusted: reject}
limits: {per_source: {invite_rate: 1, invite_burst: 1}}
`))
	if err != nil {
		panic(err)
	}
	g, err := fromConfig(cfg, []netip.Addr{netip.MustParseAddr("10.0.0.11")}, nil)
	if err != nil {
		panic(err)
	}

	filter := g.ReadFilter()
	scan := []byte("OPTIONS sip:100@198.51.100.9 SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.5\r\n\r\n")
	scanner := &net.UDPAddr{IP: net.ParseIP("203.0.113.5"), Port: 5060}
	fmt.Println("filter passes the scan to Admit:", filter("UDP", scanner, scan) != nil)

	d := g.Admit(guard.Request{Source: netip.MustParseAddr("203.0.113.5"), Transport: "UDP", Method: "OPTIONS"})
	fmt.Println("untrusted:", d.Reason, d.Code)

	carrier := netip.MustParseAddr("192.0.2.10")
	for range 2 {
		d = g.Admit(guard.Request{Source: carrier, Transport: "UDP", Method: "INVITE"})
		fmt.Println("carrier INVITE:", d.Trunk, d.Reason, d.Code)
	}
	// Output:
	// filter passes the scan to Admit: true
	// untrusted: untrusted 403
	// carrier INVITE: carrier-a none 0
	// carrier INVITE: carrier-a rate_source 503
}
