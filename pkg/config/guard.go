package config

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Trunk is a carrier allowed to send to the balancer (trunks[]). With no
// trunks at all every source may send, as before trunks existed; a
// warning says so at start (Warnings).
type Trunk struct {
	// Name identifies the trunk in logs: 1-64 characters of
	// [A-Za-z0-9_-]. Required, unique.
	Name string `mapstructure:"name"`
	// Sources are the networks the trunk sends from: CIDRs such as
	// "192.0.2.0/24" or "2001:db8::/32", or single addresses. At least
	// one is required.
	Sources []string `mapstructure:"sources"`
	// RequestURIHost, when set, is the Request-URI host the trunk's
	// out-of-dialog requests must carry, compared without case; for
	// carriers that share addresses (default "": any).
	RequestURIHost string `mapstructure:"request_uri_host"`
	// Header, when its name is set, is a header the trunk's out-of-dialog
	// requests must carry with exactly this value (default: none).
	Header TrunkHeader `mapstructure:"header"`
	// ExemptFromRateLimits exempts the trunk's sources from the
	// per-source rate limits; the global new-call cap still applies
	// (default false).
	ExemptFromRateLimits bool `mapstructure:"exempt_from_rate_limits"`
}

// TrunkHeader is a header a trunk's requests must carry.
type TrunkHeader struct {
	// Name of the header, e.g. X-Carrier-Key (default "": no condition).
	Name string `mapstructure:"name"`
	// Value the header must have; required with name.
	Value string `mapstructure:"value"`
}

// Security configures what the balancer does with traffic it does not
// take.
type Security struct {
	// Untrusted is what happens to a request from a source outside every
	// trunk, or failing its trunk's condition: drop (no answer: scanners
	// learn nothing; over TCP and TLS the connection is refused) or
	// reject (403 Forbidden) (default drop).
	Untrusted string `mapstructure:"untrusted"`
	// HideTopology keeps the nodes' addresses from carriers: their
	// Contact (in answers and in requests toward carriers) is replaced by
	// the balancer's address, and the Vias of requests nodes send toward
	// carriers are removed and restored on the answers. SDP is not
	// rewritten: media flows to the nodes directly (default false).
	HideTopology bool `mapstructure:"hide_topology"`
}

// Limits configures flood protection and message limits.
type Limits struct {
	// Action is what happens to a request over a rate limit: reply_503
	// (503 Service Unavailable with Retry-After, failover.retry_after) or
	// drop (no answer; cheaper under a flood from spoofed addresses,
	// which would otherwise receive the 503s) (default reply_503).
	Action    string          `mapstructure:"action"`
	PerSource PerSourceLimits `mapstructure:"per_source"`
	Global    GlobalLimits    `mapstructure:"global"`
	Message   MessageLimits   `mapstructure:"message"`
	TCP       TCPLimits       `mapstructure:"tcp"`
	// OverloadLatency protects the balancer's own CPU: while the Go
	// scheduler's 99th-percentile latency (how long ready work waits for
	// a CPU, over 100 ms) exceeds it in three samples in a row, new calls
	// get 503 with Retry-After so that calls already up keep their CPU; it
	// stops after a second below half of it. 0 turns shedding off (default
	// 50ms).
	OverloadLatency time.Duration `mapstructure:"overload_latency"`
}

// PerSourceLimits are token buckets per source address (per /64 for
// IPv6). A rate of 0 turns its bucket off.
type PerSourceLimits struct {
	// InviteRate is the new calls (INVITE without To tag) per second one
	// source may send (default 0: no limit).
	InviteRate float64 `mapstructure:"invite_rate"`
	// InviteBurst is how many new calls a source may send at once
	// (default 10).
	InviteBurst int `mapstructure:"invite_burst"`
	// RequestRate is the requests of any kind per second one source may
	// send (default 0: no limit).
	RequestRate float64 `mapstructure:"request_rate"`
	// RequestBurst is how many requests a source may send at once
	// (default 50).
	RequestBurst int `mapstructure:"request_burst"`
	// MaxSources bounds the sources tracked at once; the least recently
	// seen is forgotten first, so memory stays flat under a flood from
	// any number of addresses (default 100000, about 4 MB).
	MaxSources int `mapstructure:"max_sources"`
}

// GlobalLimits cap new calls from all sources together: the pool's
// capacity, whoever sends.
type GlobalLimits struct {
	// InviteRate is the new calls per second the balancer takes in all
	// (default 0: no limit).
	InviteRate float64 `mapstructure:"invite_rate"`
	// InviteBurst is how many new calls it takes at once (default 100).
	InviteBurst int `mapstructure:"invite_burst"`
}

// MessageLimits bound every SIP message, checked before sipgo parses it. A
// UDP datagram over a limit is dropped and counted; a TCP or TLS
// connection carrying such a message is closed. 0 turns a check off.
type MessageLimits struct {
	// MaxBytes bounds a message: a UDP datagram, or a TCP message's
	// start line, headers and declared body; at most 65535, sipgo's own
	// limit (default 16384).
	MaxBytes int `mapstructure:"max_bytes"`
	// MaxHeaders bounds the header fields of a message (default 100).
	MaxHeaders int `mapstructure:"max_headers"`
	// MaxHeaderBytes bounds the start line and each header field, folded
	// lines included (default 4096).
	MaxHeaderBytes int `mapstructure:"max_header_bytes"`
	// MaxVias bounds the Via values of a message (default 70: Max-Forwards'
	// usual start, so no legitimate path has more; RFC 4475's valid
	// longreq has 30).
	MaxVias int `mapstructure:"max_vias"`
}

// TCPLimits bound TCP and TLS connections to the balancer. 0 turns a
// check off.
type TCPLimits struct {
	// MaxConnections bounds the connections open at once (default 10000).
	MaxConnections int `mapstructure:"max_connections"`
	// MaxPerSource bounds the connections open at once from one address
	// (one /64 for IPv6) (default 100).
	MaxPerSource int `mapstructure:"max_per_source"`
	// IdleTimeout closes a connection that sends nothing for this long;
	// longer than the RFC 5626 keep-alive interval (default 3m).
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// ReadTimeout closes a connection whose message takes longer than
	// this to arrive from its first octet (for the first message, and the
	// TLS handshake, from the accept), and one that does not take what
	// the balancer writes within it: slow-loris senders (default 10s).
	ReadTimeout time.Duration `mapstructure:"read_timeout"`
}

// Names accepted by security.untrusted and limits.action.
const (
	UntrustedDrop   = "drop"
	UntrustedReject = "reject"
	LimitReply503   = "reply_503"
	LimitDrop       = "drop"
)

// maxSourcesCeiling bounds limits.per_source.max_sources (about 400 MB).
const maxSourcesCeiling = 10_000_000

// Prefixes returns the trunk's sources as prefixes; a single address is a
// /32 (IPv4) or /128 (IPv6).
func (t Trunk) Prefixes() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(t.Sources))
	for _, s := range t.Sources {
		p, err := parseSource(s)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, nil
}

// parseSource reads a CIDR or a single address. A CIDR with host bits set
// is refused: 10.0.0.1/8 is more likely a typo than a wish for 10.0.0.0/8.
func parseSource(s string) (netip.Prefix, error) {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR such as 192.0.2.0/24", s)
		}
		if p.Addr().Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q: zones are not allowed", s)
		}
		if m := p.Masked(); m != p {
			return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %s?)", s, m)
		}
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%q is not an IP address or CIDR", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// Warnings lists what is valid but probably not meant, for the log at
// start.
func (c *Config) Warnings() []string {
	var w []string
	if len(c.Trunks) == 0 {
		w = append(w, "trunks: none configured, so every source on the internet may send calls to the pool; "+
			"list your carriers' networks under trunks to admit only them")
	}
	return w
}

func (c *Config) validateTrunks(p *problems) {
	names := make(map[string]int)
	for i, t := range c.Trunks {
		key := fmt.Sprintf("trunks[%d]", i)
		p.uniqueName("trunks", i, "name", t.Name, names)
		if len(t.Sources) == 0 {
			p.add(key+".sources", "at least one CIDR or address is required")
		}
		seen := make(map[netip.Prefix]int)
		for j, s := range t.Sources {
			skey := fmt.Sprintf("%s.sources[%d]", key, j)
			pf, err := parseSource(s)
			if err != nil {
				p.add(skey, "%v", err)
				continue
			}
			if k, dup := seen[pf]; dup {
				p.add(skey, "duplicate of %s.sources[%d]", key, k)
				continue
			}
			seen[pf] = j
		}
		if h := t.RequestURIHost; h != "" {
			if err := checkHost(strings.Trim(h, "[]")); err != nil {
				p.add(key+".request_uri_host", "%q is not a host name or IP address", h)
			}
		}
		switch {
		case t.Header.Name == "" && t.Header.Value != "":
			p.add(key+".header.name", "required with header.value")
		case t.Header.Name != "" && !isToken(t.Header.Name):
			p.add(key+".header.name", "%q is not a SIP header name", t.Header.Name)
		case t.Header.Name != "" && t.Header.Value == "":
			p.add(key+".header.value", "required with header.name")
		}
		if strings.ContainsAny(t.Header.Value, "\r\n") {
			p.add(key+".header.value", "must not contain CR or LF")
		}
	}
}

func (c *Config) validateSecurity(p *problems) {
	switch c.Security.Untrusted {
	case UntrustedDrop, UntrustedReject:
	default:
		p.add("security.untrusted", "unknown action %q (want %s or %s)", c.Security.Untrusted, UntrustedDrop, UntrustedReject)
	}
}

func (c *Config) validateLimits(p *problems) {
	l := c.Limits
	switch l.Action {
	case LimitReply503, LimitDrop:
	default:
		p.add("limits.action", "unknown action %q (want %s or %s)", l.Action, LimitReply503, LimitDrop)
	}
	rate := func(key string, r float64, burstKey string, burst int) {
		if r < 0 || r != r || r > 1e9 {
			p.add(key, "must be a rate in [0, 1e9] per second, got %v", r)
		}
		if burst < 0 {
			p.add(burstKey, "must be >= 0, got %d", burst)
		} else if r > 0 && burst < 1 {
			p.add(burstKey, "must be >= 1 when %s is set, got %d", key, burst)
		}
	}
	ps := l.PerSource
	rate("limits.per_source.invite_rate", ps.InviteRate, "limits.per_source.invite_burst", ps.InviteBurst)
	rate("limits.per_source.request_rate", ps.RequestRate, "limits.per_source.request_burst", ps.RequestBurst)
	if ps.MaxSources < 1 || ps.MaxSources > maxSourcesCeiling {
		p.add("limits.per_source.max_sources", "must be 1-%d, got %d", maxSourcesCeiling, ps.MaxSources)
	}
	rate("limits.global.invite_rate", l.Global.InviteRate, "limits.global.invite_burst", l.Global.InviteBurst)

	m := l.Message
	if m.MaxBytes != 0 && (m.MaxBytes < 1024 || m.MaxBytes > 65535) {
		p.add("limits.message.max_bytes", "must be 0 (off) or 1024-65535 (sipgo refuses larger messages), got %d", m.MaxBytes)
	}
	p.atLeast("limits.message.max_headers", m.MaxHeaders, 0)
	p.atLeast("limits.message.max_header_bytes", m.MaxHeaderBytes, 0)
	p.atLeast("limits.message.max_vias", m.MaxVias, 0)
	if m.MaxHeaders > 0 && m.MaxHeaders < 10 {
		p.add("limits.message.max_headers", "must be 0 (off) or at least 10 (an ordinary INVITE has 10), got %d", m.MaxHeaders)
	}
	if m.MaxHeaderBytes > 0 && m.MaxHeaderBytes < 256 {
		p.add("limits.message.max_header_bytes", "must be 0 (off) or at least 256, got %d", m.MaxHeaderBytes)
	}

	t := l.TCP
	p.atLeast("limits.tcp.max_connections", t.MaxConnections, 0)
	p.atLeast("limits.tcp.max_per_source", t.MaxPerSource, 0)
	if t.MaxConnections > 0 && t.MaxPerSource > t.MaxConnections {
		p.add("limits.tcp.max_per_source", "must not exceed limits.tcp.max_connections (%d), got %d", t.MaxConnections, t.MaxPerSource)
	}
	if t.IdleTimeout < 0 {
		p.add("limits.tcp.idle_timeout", "must be >= 0 (0: off), got %s", t.IdleTimeout)
	}
	if t.ReadTimeout < 0 {
		p.add("limits.tcp.read_timeout", "must be >= 0 (0: off), got %s", t.ReadTimeout)
	}
	// Below a millisecond the scheduler's ordinary jitter would shed calls
	// on an idle machine; above a few seconds transactions time out first.
	if ol := l.OverloadLatency; ol != 0 && (ol < time.Millisecond || ol > 5*time.Second) {
		p.add("limits.overload_latency", "must be 0 (off) or 1ms-5s, got %s", ol)
	}
}

func (c *Config) validateTLSReload(p *problems) {
	if c.SIP.TLS.ReloadCheck < 0 {
		p.add("sip.tls.reload_check", "must be >= 0 (0: never reload), got %s", c.SIP.TLS.ReloadCheck)
	}
}
