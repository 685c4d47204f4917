package sip

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sipbalancer/sipbalancer/pkg/guard"
)

// Listen is one socket to serve: Network is udp, tcp or tls.
type Listen struct {
	Network string
	Addr    string
}

// listener is a bound socket and what we advertise for it.
type listener struct {
	network   string // "udp", "tcp", "tls"
	transport string // "UDP", "TCP", "TLS" as written in Via
	bound     netip.AddrPort
	// advHost:advPort goes into Record-Route: the address carriers and
	// nodes reach the balancer at (a VIP shared by instances).
	advHost string
	advPort int
	// viaHost:viaPort goes into our Via: this instance's own address, so
	// that responses come back to the instance holding the transaction
	// even when the Record-Route address is a shared VIP.
	viaHost string
	viaPort int
	// viaSentBy is viaHost:viaPort, built once (it goes into every
	// binding, for another instance's CANCEL).
	viaSentBy string
	// laddr is the local address UDP requests to nodes are sent from, so
	// that every answer comes back to the listening socket (sipgo would
	// otherwise open an ephemeral socket per destination).
	laddr sip.Addr

	udp net.PacketConn
	// replySourceErr says why a wildcard UDP listener answers from the
	// kernel's choice of source address rather than the peer's destination.
	replySourceErr error
	// more holds further UDP sockets bound to the same address with
	// SO_REUSEPORT: the kernel spreads flows over them, so that several
	// readers parse in parallel (sipgo reads and parses a socket in one
	// goroutine).
	more []net.PacketConn
	ln   net.Listener
}

func transportOf(network string) string {
	return strings.ToUpper(network)
}

// bind opens the socket(s) for l: udpSockets sockets for UDP (at least
// one). tlsConf is required for tls.
func bind(l Listen, tlsConf *tls.Config, udpSockets, udpBuffer int, g *guard.Guard) (*listener, error) {
	network := strings.ToLower(l.Network)
	out := &listener{network: network, transport: transportOf(network)}
	switch network {
	case "udp":
		lc := net.ListenConfig{Control: reusePort}
		if udpSockets <= 1 {
			lc.Control = nil
		}
		pc, err := lc.ListenPacket(context.Background(), "udp", l.Addr)
		if err != nil {
			return nil, fmt.Errorf("listen udp %s: %w", l.Addr, err)
		}
		setReadBuffer(pc, udpBuffer)
		out.udp = pc
		for i := 1; i < udpSockets; i++ {
			// Bound to the port the first one got (it may have been 0).
			more, err := lc.ListenPacket(context.Background(), "udp", pc.LocalAddr().String())
			if err != nil {
				out.close()
				return nil, fmt.Errorf("listen udp %s (socket %d, SO_REUSEPORT): %w", l.Addr, i+1, err)
			}
			setReadBuffer(more, udpBuffer)
			out.more = append(out.more, more)
		}
		ap, err := netip.ParseAddrPort(pc.LocalAddr().String())
		if err != nil {
			out.close()
			return nil, fmt.Errorf("listen udp %s: local address: %w", l.Addr, err)
		}
		out.bound = ap
		if ap.Addr().IsUnspecified() {
			// Answer each peer from the address it wrote to (a VIP). Where
			// the kernel refuses, the listener still serves, answering from
			// the kernel's choice; Start logs why.
			out.replySourceErr = out.answerFromDestination()
		}
		host, port, _ := net.SplitHostPort(pc.LocalAddr().String())
		p, _ := strconv.Atoi(port)
		// Must render exactly as LocalAddr().String() so that sipgo's
		// connection pool finds the listener.
		out.laddr = sip.Addr{IP: net.ParseIP(host), Port: p, Hostname: host}
	case "tcp", "tls":
		if network == "tls" && tlsConf == nil {
			return nil, fmt.Errorf("listen tls %s: no certificate configured", l.Addr)
		}
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			return nil, fmt.Errorf("listen %s %s: %w", network, l.Addr, err)
		}
		if network == "tls" {
			ln = tls.NewListener(ln, tlsConf)
		}
		if g != nil {
			// Outside TLS, so that the limits read plaintext and the read
			// timeout bounds the handshake too.
			ln = g.Listener(ln)
		}
		out.ln = ln
		ap, err := netip.ParseAddrPort(ln.Addr().String())
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("listen %s %s: local address: %w", network, l.Addr, err)
		}
		out.bound = ap
	default:
		return nil, fmt.Errorf("listen %q: unsupported network %q", l.Addr, l.Network)
	}
	return out, nil
}

// answerFromDestination wraps the listener's UDP sockets so that they share
// one replySources: all of them or, on error, none.
func (l *listener) answerFromDestination() error {
	r := newReplySources()
	wrapped := make([]net.PacketConn, 0, 1+len(l.more))
	for _, c := range append([]net.PacketConn{l.udp}, l.more...) {
		w, err := r.wrap(c)
		if err != nil {
			return err
		}
		wrapped = append(wrapped, w)
	}
	l.udp, l.more = wrapped[0], wrapped[1:]
	return nil
}

func (l *listener) close() {
	if l.udp != nil {
		l.udp.Close()
	}
	for _, c := range l.more {
		c.Close()
	}
	if l.ln != nil {
		l.ln.Close()
	}
}

// String renders the listener as scheme://addr.
func (l *listener) String() string {
	return l.network + "://" + l.bound.String()
}

// advertiseFor fills advHost/advPort from the advertise setting: host[:port]
// (a port applies to every listener), else the bound address, else for a
// wildcard bind the host's first non-loopback IPv4 address.
func (l *listener) advertiseFor(advertise string, fallbackHost string) error {
	l.advPort = int(l.bound.Port())
	l.viaPort = l.advPort
	if ip := l.bound.Addr(); !ip.IsUnspecified() {
		l.viaHost = ip.Unmap().String()
	} else {
		l.viaHost = fallbackHost
	}
	defer func() { l.viaSentBy = net.JoinHostPort(l.viaHost, strconv.Itoa(l.viaPort)) }()
	if advertise != "" {
		host, port, err := net.SplitHostPort(advertise)
		if err != nil {
			// host without port
			l.advHost = strings.Trim(advertise, "[]")
			return nil
		}
		p, err := strconv.Atoi(port)
		if err != nil || p <= 0 || p > 65535 {
			return fmt.Errorf("sip.advertise: bad port in %q", advertise)
		}
		l.advHost, l.advPort = host, p
		return nil
	}
	if ip := l.bound.Addr(); !ip.IsUnspecified() {
		l.advHost = ip.Unmap().String()
		return nil
	}
	l.advHost = fallbackHost
	return nil
}

// firstHostIPv4 returns the first non-loopback IPv4 address of the host, or
// 127.0.0.1.
func firstHostIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	return "127.0.0.1"
}

// selfSet answers "is this host:port one of ours?" for Route and
// Request-URI checks. It holds the advertised addresses and every address
// we listen on (all interface addresses for a wildcard bind).
type selfSet struct {
	hostPorts map[string]struct{}
}

func newSelfSet(ls []*listener) selfSet {
	s := selfSet{hostPorts: make(map[string]struct{})}
	add := func(host string, port int) {
		s.hostPorts[strings.ToLower(net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port)))] = struct{}{}
	}
	var ifaceIPs []string
	for _, l := range ls {
		port := int(l.bound.Port())
		add(l.advHost, l.advPort)
		add(l.advHost, port)
		add(l.viaHost, l.viaPort)
		ip := l.bound.Addr().Unmap()
		if ip.IsUnspecified() {
			if ifaceIPs == nil {
				ifaceIPs = interfaceIPs()
			}
			for _, h := range ifaceIPs {
				add(h, port)
			}
			continue
		}
		add(ip.String(), port)
	}
	return s
}

func interfaceIPs() []string {
	out := []string{"127.0.0.1", "::1"}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			out = append(out, n.IP.String())
		}
	}
	return out
}

// has reports whether host:port (port 0 meaning the scheme's default) is us.
func (s selfSet) has(host string, port int, secure bool) bool {
	if port == 0 {
		port = 5060
		if secure {
			port = 5061
		}
	}
	var buf [80]byte
	b := buf[:0]
	host = strings.Trim(host, "[]")
	if strings.IndexByte(host, ':') >= 0 {
		b = append(b, '[')
		b = appendLower(b, host)
		b = append(b, ']')
	} else {
		b = appendLower(b, host)
	}
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(port), 10)
	_, ok := s.hostPorts[string(b)]
	return ok
}

func appendLower(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}

// setReadBuffer asks for a larger receive buffer: it rides out bursts. The
// kernel caps it at net.core.rmem_max.
func setReadBuffer(pc net.PacketConn, size int) {
	if uc, ok := pc.(*net.UDPConn); ok && size > 0 {
		_ = uc.SetReadBuffer(size)
	}
}
