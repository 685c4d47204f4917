package app

import (
	"fmt"
	"net/netip"

	"github.com/sipbalancer/sipbalancer/pkg/config"
	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/guard"
)

// guardTrunks converts the configured trunks.
func guardTrunks(cfg *config.Config) ([]guard.Trunk, error) {
	out := make([]guard.Trunk, 0, len(cfg.Trunks))
	for i, t := range cfg.Trunks {
		cidrs, err := t.Prefixes()
		if err != nil {
			return nil, fmt.Errorf("trunks[%d].sources: %w", i, err)
		}
		out = append(out, guard.Trunk{
			Name: t.Name, CIDRs: cidrs, RequestURIHost: t.RequestURIHost,
			Header: t.Header.Name, HeaderValue: t.Header.Value,
			ExemptFromRateLimits: t.ExemptFromRateLimits,
		})
	}
	return out, nil
}

// nodeIPs lists the nodes' addresses: always allowed, never rate limited.
func nodeIPs(specs []dispatcher.Spec) []netip.Addr {
	out := make([]netip.Addr, 0, len(specs))
	for _, s := range specs {
		out = append(out, s.Addr.Addr().Unmap())
	}
	return out
}

// newGuard builds admission control from the configuration.
func (a *App) newGuard(cfg *config.Config, specs []dispatcher.Spec) (*guard.Guard, error) {
	trunks, err := guardTrunks(cfg)
	if err != nil {
		return nil, err
	}
	act := func(reply bool) guard.Action {
		if reply {
			return guard.Reply
		}
		return guard.Drop
	}
	l := cfg.Limits
	return guard.New(guard.Config{
		Trunks:     trunks,
		Nodes:      nodeIPs(specs),
		Untrusted:  act(cfg.Security.Untrusted == config.UntrustedReject),
		RateAction: act(l.Action == config.LimitReply503),
		Limits: guard.LimiterConfig{
			InviteRate: l.PerSource.InviteRate, InviteBurst: l.PerSource.InviteBurst,
			RequestRate: l.PerSource.RequestRate, RequestBurst: l.PerSource.RequestBurst,
			MaxSources:       l.PerSource.MaxSources,
			GlobalInviteRate: l.Global.InviteRate, GlobalInviteBurst: l.Global.InviteBurst,
		},
		Message: guard.MessageLimits{
			MaxBytes: l.Message.MaxBytes, MaxHeaders: l.Message.MaxHeaders,
			MaxHeaderBytes: l.Message.MaxHeaderBytes, MaxVias: l.Message.MaxVias,
		},
		TCP: guard.TCPLimits{
			MaxConnections: l.TCP.MaxConnections, MaxPerSource: l.TCP.MaxPerSource,
			IdleTimeout: l.TCP.IdleTimeout, ReadTimeout: l.TCP.ReadTimeout,
		},
		OnReject: func(r guard.Reason) { a.rec.Rejected(r.String()) },
	})
}

// Guard returns admission control (for stats and tests).
func (a *App) Guard() *guard.Guard { return a.guard }
