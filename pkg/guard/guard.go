package guard

import (
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"
)

// Action says what happens to a request the guard refuses.
type Action uint8

const (
	// Drop: no answer. The sender learns nothing; its transaction times
	// out.
	Drop Action = iota
	// Reply: a response (403 for an untrusted source, 503 with
	// Retry-After over a rate limit).
	Reply
)

// Config is everything the guard enforces.
type Config struct {
	// Trunks are the carriers allowed to send; none: every source.
	Trunks []Trunk
	// Nodes are the pool's addresses, always allowed and never rate
	// limited.
	Nodes []netip.Addr
	// Untrusted is what happens to a request from outside the trunks
	// (security.untrusted: Drop for "drop", Reply (403) for "reject").
	Untrusted Action
	// Limits are the token buckets (limits.per_source, limits.global).
	Limits LimiterConfig
	// RateAction is what happens over a rate limit (limits.action: Drop
	// for "drop", Reply (503) for "reply_503").
	RateAction Action
	// Message bounds every message (limits.message).
	Message MessageLimits
	// TCP bounds TCP and TLS connections (limits.tcp).
	TCP TCPLimits
	// OnReject, when set, is called for every refusal, wherever it
	// happens (read filter, listener, Admit), with its reason: the hook
	// for sipbalancer_sip_rejected_total{reason=r.String()}. It runs on
	// the hot path and under floods: it must be cheap and never block.
	OnReject func(Reason)
	// Now is the clock (default time.Now); for tests.
	Now func() time.Time
}

// Guard is the balancer's admission control: a trunk ACL, rate limits and
// message limits, applied at three points of the request path (see the
// package documentation). It is safe for concurrent use.
type Guard struct {
	acl       atomic.Pointer[ACL]
	lim       *Limiter
	msg       MessageLimits
	tcp       TCPLimits
	untrusted Action
	rate      Action
	now       func() time.Time
	counters  Counters
	// udpFiltered: ReadFilter was handed out, so UDP requests reaching
	// Admit already passed the source and (in drop mode) rate checks.
	udpFiltered atomic.Bool
}

// New builds a guard.
func New(cfg Config) (*Guard, error) {
	acl, err := NewACL(cfg.Trunks, cfg.Nodes)
	if err != nil {
		return nil, err
	}
	lim, err := NewLimiter(cfg.Limits)
	if err != nil {
		return nil, err
	}
	g := &Guard{lim: lim, msg: cfg.Message, tcp: cfg.TCP, untrusted: cfg.Untrusted, rate: cfg.RateAction, now: cfg.Now}
	if g.now == nil {
		g.now = time.Now
	}
	g.counters.onAdd = cfg.OnReject
	g.acl.Store(acl)
	return g, nil
}

// SetTrunks swaps in a new ACL (configuration reload, or a changed node
// set). Requests in flight finish under the ACL they started with.
func (g *Guard) SetTrunks(trunks []Trunk, nodes []netip.Addr) error {
	acl, err := NewACL(trunks, nodes)
	if err != nil {
		return err
	}
	g.acl.Store(acl)
	return nil
}

// ACL returns the ACL in force.
func (g *Guard) ACL() *ACL { return g.acl.Load() }

// Limiter returns the rate limiter.
func (g *Guard) Limiter() *Limiter { return g.lim }

// Stats returns refusal counts by reason.
func (g *Guard) Stats() Stats { return g.counters.Stats() }

// Counters returns the guard's counters, for components built outside it.
func (g *Guard) Counters() *Counters { return &g.counters }

// ReadFilter returns the function for sipgo's transport read filter. It
// sees every read before sipgo parses it; it returns the data to parse, or
// nil to drop it. For UDP it
//
//   - drops a datagram over the message limits;
//   - drops anything from a source outside the trunks: a response always,
//     a request when untrusted is Drop (with Reply, the request goes on so
//     that Admit answers 403);
//   - with RateAction Drop, drops a request over a rate limit.
//
// Dropping here, before sipgo parses, means no server transaction, no
// automatic 100 Trying, no parse-error log line per junk datagram. TCP and
// TLS reads are passed through: the Listener wrapper checks connections
// and frames their streams. Hand it to sipgo as
//
//	sip.WithTransportLayerReadFilter(func(p sip.TransportReadProps, b []byte) ([]byte, error) {
//		return filter(p.Transport, p.RemoteAddr, b), nil
//	})
//
// and never return an error from there: sipgo stops a UDP listener whose
// filter fails.
func (g *Guard) ReadFilter() func(transport string, remote net.Addr, data []byte) []byte {
	g.udpFiltered.Store(true)
	return g.filter
}

func (g *Guard) filter(transport string, remote net.Addr, data []byte) []byte {
	if !strings.EqualFold(transport, "udp") {
		return data
	}
	d := InspectDatagram(data, g.msg)
	if d.Reason != ReasonNone {
		g.counters.Add(d.Reason)
		return nil
	}
	src := remoteIP(remote)
	s := g.acl.Load().Source(src)
	if !s.Admitted {
		if d.KeepAlive || !d.Request || g.untrusted == Drop {
			g.counters.Add(ReasonUntrusted)
			return nil
		}
		return data
	}
	if d.KeepAlive || !d.Request || s.Node || g.rate != Drop {
		return data
	}
	var v Verdict
	if s.Exempt {
		v = g.lim.AllowExempt(d.NewCall(), g.now())
	} else {
		v = g.lim.Allow(src, d.NewCall(), g.now())
	}
	if v != Allowed {
		g.counters.Add(v.Reason())
		return nil
	}
	return data
}

// Listener wraps a TCP or TLS listener with the connection and message
// limits, and, when untrusted is Drop, refuses connections from sources
// outside the trunks at accept.
func (g *Guard) Listener(l net.Listener) *Listener {
	opts := ListenerOptions{TCPLimits: g.tcp, Message: g.msg, Counters: &g.counters}
	if g.untrusted == Drop {
		opts.Allow = func(src netip.Addr) bool { return g.acl.Load().Source(src).Admitted }
	}
	return NewListener(l, opts)
}

// Request is what Admit needs to know about a parsed request.
type Request struct {
	// Source is the packet's or connection's source address.
	Source netip.Addr
	// Transport is "UDP", "TCP" or "TLS", as sipgo sets it.
	Transport string
	// Method is the request method.
	Method string
	// InDialog: the To header has a tag. Trunk conditions apply only to
	// requests outside a dialog: a BYE's Request-URI is a Contact, not the
	// trunk's host.
	InDialog bool
	// RequestURIHost is the Request-URI host.
	RequestURIHost string
	// Header returns the value of the named header ("" when absent); it
	// may be nil when no trunk has a header condition.
	Header func(name string) string
}

// Decision is Admit's answer.
type Decision struct {
	// Reason is why the request is refused, or ReasonNone.
	Reason Reason
	// Code is the response to send when refused: 403, 503 (add
	// Retry-After), or 0 for none (drop silently: return without
	// responding).
	Code int
	// Trunk is the trunk the request was admitted for ("" for a node or an
	// open ACL).
	Trunk string
	// Node: the source is a node of the pool.
	Node bool
}

// Admitted reports whether the request may go on.
func (d Decision) Admitted() bool { return d.Reason == ReasonNone }

// Admit decides a parsed request: the trunk ACL with its R-URI and header
// conditions, then the rate limits — those the UDP read filter has not
// already applied. ACK and CANCEL are judged by their source alone, and a
// refused ACK is never answered. It is meant for the top of the request
// handler (and for ACKs, where they are forwarded).
func (g *Guard) Admit(r Request) Decision {
	acl := g.acl.Load()
	s := acl.Source(r.Source)
	if s.Node {
		return Decision{Node: true}
	}
	ack := r.Method == "ACK"
	var trunk string
	if s.Admitted {
		if !acl.Open() && !r.InDialog && !ack && r.Method != "CANCEL" {
			name, ok := acl.Check(r.Source, r.RequestURIHost, r.Header)
			if !ok {
				s.Admitted = false
			}
			trunk = name
		}
	}
	if !s.Admitted {
		g.counters.Add(ReasonUntrusted)
		d := Decision{Reason: ReasonUntrusted}
		if g.untrusted == Reply && !ack {
			d.Code = 403
		}
		return d
	}
	filtered := strings.EqualFold(r.Transport, "udp") && g.udpFiltered.Load() && g.rate == Drop
	if !filtered {
		newCall := r.Method == "INVITE" && !r.InDialog
		var v Verdict
		if s.Exempt {
			v = g.lim.AllowExempt(newCall, g.now())
		} else {
			v = g.lim.Allow(r.Source, newCall, g.now())
		}
		if v != Allowed {
			g.counters.Add(v.Reason())
			d := Decision{Reason: v.Reason(), Trunk: trunk}
			if g.rate == Reply && !ack {
				d.Code = 503
			}
			return d
		}
	}
	return Decision{Trunk: trunk}
}
