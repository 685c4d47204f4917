package config

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// NodeAddr is a parsed nodes[].sip: where calls for the node are sent.
type NodeAddr struct {
	// Host is an IP address (IPv6 without brackets) or a DNS name, which
	// is resolved elsewhere.
	Host string
	Port int
	// Transport is "UDP", "TCP" or "TLS", as written in a Via header.
	Transport string
}

// HostPort returns the address as host:port, with brackets for IPv6.
func (a NodeAddr) HostPort() string {
	return net.JoinHostPort(a.Host, strconv.Itoa(a.Port))
}

// ParseNodeSIP parses nodes[].sip. Two forms are accepted:
//
//   - host:port, sent over UDP: "10.0.0.11:5060", "fs1.example:5080",
//     "[2001:db8::11]:5060". The port is required.
//   - a SIP URI without user part or headers: "sip:10.0.0.11:5060;transport=tcp",
//     "sips:fs1.example". transport is udp, tcp or tls (default udp); sips:
//     means TLS. The port defaults to 5060, or 5061 for TLS.
func ParseNodeSIP(s string) (NodeAddr, error) {
	lower := strings.ToLower(s)
	switch {
	case strings.HasPrefix(lower, "sip:"):
		return parseSIPURI(s, s[len("sip:"):], false)
	case strings.HasPrefix(lower, "sips:"):
		return parseSIPURI(s, s[len("sips:"):], true)
	}
	host, port, err := splitHostPort(s, remoteAddr)
	if err != nil {
		return NodeAddr{}, fmt.Errorf("%q is not host:port or a sip: URI (%v)", s, err)
	}
	return NodeAddr{Host: host, Port: port, Transport: "UDP"}, nil
}

func parseSIPURI(uri, rest string, secure bool) (NodeAddr, error) {
	fail := func(format string, args ...any) (NodeAddr, error) {
		return NodeAddr{}, fmt.Errorf("SIP URI %q: %s", uri, fmt.Sprintf(format, args...))
	}
	if strings.Contains(rest, "?") {
		return fail("headers are not allowed")
	}
	hostport, params, _ := strings.Cut(rest, ";")
	if strings.Contains(hostport, "@") {
		return fail("a user part is not allowed; write sip:host:port")
	}

	transport := "UDP"
	if secure {
		transport = "TLS"
	}
	seen := false
	for p := range strings.SplitSeq(params, ";") {
		if params == "" {
			break
		}
		name, value, _ := strings.Cut(p, "=")
		if !strings.EqualFold(name, "transport") {
			return fail("unsupported parameter %q (only transport)", name)
		}
		if seen {
			return fail("transport given twice")
		}
		seen = true
		switch v := strings.ToLower(value); {
		case v == "udp" && secure:
			return fail("sips: cannot use transport=udp")
		case v == "udp", v == "tcp", v == "tls":
			if !secure {
				transport = strings.ToUpper(v)
			}
		default:
			return fail("unsupported transport %q (want udp, tcp or tls)", value)
		}
	}

	host, port, err := splitURIHostPort(hostport)
	if err != nil {
		return fail("%v", err)
	}
	if port == 0 {
		port = 5060
		if transport == "TLS" {
			port = 5061
		}
	}
	return NodeAddr{Host: host, Port: port, Transport: transport}, nil
}

// splitURIHostPort splits the hostport of a SIP URI, where the port is
// optional (0 when absent).
func splitURIHostPort(s string) (string, int, error) {
	if s == "" {
		return "", 0, errors.New("missing host")
	}
	if strings.HasPrefix(s, "[") {
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return "", 0, errors.New("unclosed [ in IPv6 host")
		}
		if s[end+1:] == "" {
			s = s[1:end]
			return s, 0, checkRemoteHost(s)
		}
	} else if !strings.Contains(s, ":") {
		return s, 0, checkRemoteHost(s)
	}
	return splitHostPort(s, remoteAddr)
}

func checkRemoteHost(host string) error {
	if err := checkHost(host); err != nil {
		return err
	}
	if isUnspecified(host) {
		return fmt.Errorf("%s is the unspecified address, not one to send to", host)
	}
	return nil
}

// RetryAfterSeconds is failover.retry_after as the value of a Retry-After
// header. Validate makes it whole seconds, at least 1.
func (c *Config) RetryAfterSeconds() int {
	return int(c.Failover.RetryAfter / time.Second)
}
