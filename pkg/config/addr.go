package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// hostPortRules says what an address may omit: a listen address may leave
// the host empty (all interfaces) and use port 0 (any free port, for tests);
// an address we send to may do neither.
type hostPortRules struct {
	emptyHost bool
	zeroPort  bool
}

var (
	listenAddr = hostPortRules{emptyHost: true, zeroPort: true}
	remoteAddr = hostPortRules{}
)

// splitHostPort checks s as host:port under r and returns its parts; an IPv6
// host is returned without brackets.
func splitHostPort(s string, r hostPortRules) (string, int, error) {
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		if !strings.Contains(s, ":") {
			return "", 0, errors.New("missing port")
		}
		return "", 0, errors.New("want host:port, with an IPv6 host in brackets")
	}
	port, err := parsePort(portStr, r.zeroPort)
	if err != nil {
		return "", 0, err
	}
	if host == "" {
		if !r.emptyHost {
			return "", 0, errors.New("missing host")
		}
		return host, port, nil
	}
	if err := checkHost(host); err != nil {
		return "", 0, err
	}
	if !r.emptyHost && isUnspecified(host) {
		return "", 0, fmt.Errorf("%s is the unspecified address, not one to send to", host)
	}
	return host, port, nil
}

func parsePort(s string, zeroOK bool) (int, error) {
	port, err := strconv.Atoi(s)
	if err != nil || s == "" || s[0] == '+' || s[0] == '-' {
		return 0, fmt.Errorf("port %q is not a number", s)
	}
	if port > 65535 || port < 0 || (port == 0 && !zeroOK) {
		return 0, fmt.Errorf("port %d is out of range", port)
	}
	return port, nil
}

// checkHost accepts an IP address (IPv6 without brackets, with an optional
// zone) or a DNS name. Names are not resolved here.
func checkHost(host string) error {
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !isHostname(host) {
		return fmt.Errorf("invalid host %q", host)
	}
	return nil
}

// isHostname reports whether s is a DNS name: dot-separated labels of
// letters, digits, '-' and '_' (container runtimes use it), each 1-63
// characters, not starting or ending with '-'. A name whose last label is all
// digits is rejected, so a mistyped IPv4 address (10.0.0.300) is not taken
// for a name.
func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			ch := l[i]
			if !isAlnum(ch) && ch != '-' && ch != '_' {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}

func isUnspecified(host string) bool {
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsUnspecified()
}

func isAlnum(ch byte) bool {
	return ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9'
}

// checkHostOrHostPort accepts host or host:port (IPv6 in brackets when a
// port follows), for sip.advertise.
func checkHostOrHostPort(s string) error {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.IsUnspecified() {
			return fmt.Errorf("%s is the unspecified address, not one to send to", s)
		}
		return nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		return checkHostOrHostPort(s[1 : len(s)-1])
	}
	if strings.Contains(s, ":") {
		_, _, err := splitHostPort(s, remoteAddr)
		return err
	}
	if !isHostname(s) {
		return fmt.Errorf("invalid host %q", s)
	}
	return nil
}
