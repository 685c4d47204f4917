package config

import (
	"fmt"
	"strings"
)

// Listener is one parsed entry of sip.listen.
type Listener struct {
	// Network is "udp", "tcp" or "tls".
	Network string
	// Addr is host:port as written; the host may be empty (all interfaces)
	// and the port 0 (any free port).
	Addr string
}

// ParseListen parses a sip.listen entry such as "udp://0.0.0.0:5060". The
// scheme is one of udp, tcp or tls, in any case; nothing may follow the port.
func ParseListen(s string) (Listener, error) {
	scheme, addr, ok := strings.Cut(s, "://")
	if !ok {
		return Listener{}, fmt.Errorf("%q is not scheme://host:port (scheme udp, tcp or tls)", s)
	}
	network := strings.ToLower(scheme)
	switch network {
	case "udp", "tcp", "tls":
	default:
		return Listener{}, fmt.Errorf("unsupported scheme %q (want udp, tcp or tls)", scheme)
	}
	if _, _, err := splitHostPort(addr, listenAddr); err != nil {
		return Listener{}, fmt.Errorf("%q: %v", s, err)
	}
	return Listener{Network: network, Addr: addr}, nil
}

// Listeners parses sip.listen. On a validated Config it does not fail.
func (c *Config) Listeners() ([]Listener, error) {
	ls := make([]Listener, 0, len(c.SIP.Listen))
	for i, s := range c.SIP.Listen {
		l, err := ParseListen(s)
		if err != nil {
			return nil, fmt.Errorf("sip.listen[%d]: %w", i, err)
		}
		ls = append(ls, l)
	}
	return ls, nil
}
