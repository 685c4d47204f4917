package health

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/emiago/sipgo/sip"
)

// ProbeClass is what a probe says about a node.
type ProbeClass uint8

const (
	// ProbeDead: no answer, refused, or an answer that does not count as
	// alive.
	ProbeDead ProbeClass = iota
	// ProbeAlive: an alive code.
	ProbeAlive
	// ProbeFull: 503 — alive, but takes no new calls.
	ProbeFull
)

func (c ProbeClass) String() string {
	switch c {
	case ProbeAlive:
		return "alive"
	case ProbeFull:
		return "full"
	}
	return "dead"
}

// ProbeResult is the outcome of one OPTIONS probe.
type ProbeResult struct {
	Class  ProbeClass
	Status int // 0 when no answer
	RTT    time.Duration
	// Refused: the node's host refused the probe (ICMP port unreachable on
	// UDP, RST on TCP): no process listens there.
	Refused bool
	Err     error
	At      time.Time
}

// Prober sends SIP OPTIONS to one node. It uses its own socket, not the
// proxy's: a connected UDP socket reports ICMP port unreachable as
// ECONNREFUSED, so a crashed FreeSWITCH is seen at the next probe instead of
// after fall timeouts, and probes can leave from a monitoring address.
// Probe is synchronous (one probe in flight per node is the caller's
// loop); it is safe to call from one goroutine at a time.
type Prober struct {
	NodeID    string
	Target    netip.AddrPort
	Transport string // "UDP", "TCP", "TLS"
	// Source is the local IP to send from (invalid: any).
	Source  netip.Addr
	Timeout time.Duration
	// Alive classifies status codes (503 is always full, 1xx ignored).
	Alive func(code int) bool
	// UserAgent for the probe request.
	UserAgent string

	seq uint32
}

// AliveCodes builds a classifier from codes and classes ("2xx", "404").
func AliveCodes(list []string) func(int) bool {
	var classes [7]bool
	codes := map[int]bool{}
	for _, s := range list {
		if len(s) == 3 && s[1:] == "xx" && s[0] >= '1' && s[0] <= '6' {
			classes[s[0]-'0'] = true
			continue
		}
		if n, err := strconv.Atoi(s); err == nil {
			codes[n] = true
		}
	}
	return func(code int) bool {
		if code/100 < len(classes) && classes[code/100] {
			return true
		}
		return codes[code]
	}
}

// Probe sends one OPTIONS and waits up to Timeout for its final answer.
func (p *Prober) Probe(ctx context.Context) ProbeResult {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, p.Timeout)
	defer cancel()
	var res ProbeResult
	switch p.Transport {
	case "TCP", "TLS":
		res = p.probeStream(ctx)
	default:
		res = p.probeUDP(ctx)
	}
	res.At = time.Now()
	if res.Status != 0 {
		res.RTT = res.At.Sub(start)
	}
	switch {
	case res.Status == 503:
		res.Class = ProbeFull
	case res.Status >= 200 && p.Alive != nil && p.Alive(res.Status):
		res.Class = ProbeAlive
	case res.Status >= 200:
		res.Class = ProbeDead
		if res.Err == nil {
			res.Err = fmt.Errorf("answered %d", res.Status)
		}
	}
	return res
}

func (p *Prober) request(local net.Addr, transport string) (raw []byte, callID string, cseq uint32) {
	p.seq++
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	callID = "probe-" + id + "@sipbalancer"
	host, port := "127.0.0.1", 0
	if ap, err := netip.ParseAddrPort(local.String()); err == nil {
		host, port = ap.Addr().Unmap().String(), int(ap.Port())
		if ap.Addr().Is6() && !ap.Addr().Is4In6() {
			host = "[" + host + "]"
		}
	}
	target := p.Target.Addr().Unmap().String()
	if p.Target.Addr().Is6() && !p.Target.Addr().Is4In6() {
		target = "[" + target + "]"
	}
	ua := p.UserAgent
	if ua == "" {
		ua = "sipbalancer"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "OPTIONS sip:%s:%d SIP/2.0\r\n", target, p.Target.Port())
	fmt.Fprintf(&b, "Via: SIP/2.0/%s %s:%d;branch=z9hG4bKprobe%s;rport\r\n", transport, host, port, id)
	b.WriteString("Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <sip:sipbalancer@%s>;tag=%s\r\n", host, id[:8])
	fmt.Fprintf(&b, "To: <sip:%s:%d>\r\n", target, p.Target.Port())
	fmt.Fprintf(&b, "Call-ID: %s\r\n", callID)
	fmt.Fprintf(&b, "CSeq: %d OPTIONS\r\n", p.seq)
	fmt.Fprintf(&b, "User-Agent: %s\r\n", ua)
	b.WriteString("Accept: application/sdp\r\nContent-Length: 0\r\n\r\n")
	return []byte(b.String()), callID, p.seq
}

// match reports whether data is the final answer to our probe.
func match(parser *sip.Parser, data []byte, callID string, cseq uint32) (int, bool) {
	msg, err := parser.ParseSIP(data)
	if err != nil {
		return 0, false
	}
	res, ok := msg.(*sip.Response)
	if !ok || res.CallID() == nil || string(*res.CallID()) != callID || res.CSeq() == nil || res.CSeq().SeqNo != cseq {
		return 0, false
	}
	if res.StatusCode < 200 {
		return 0, false
	}
	return res.StatusCode, true
}

// probeUDP sends over a connected UDP socket, resending every 200 ms (a
// lost datagram must not read as a dead node) until the deadline.
func (p *Prober) probeUDP(ctx context.Context) ProbeResult {
	d := net.Dialer{}
	if p.Source.IsValid() {
		d.LocalAddr = &net.UDPAddr{IP: p.Source.AsSlice()}
	}
	conn, err := d.DialContext(ctx, "udp", p.Target.String())
	if err != nil {
		return ProbeResult{Err: err, Refused: probeRefused(err)}
	}
	defer conn.Close()
	raw, callID, cseq := p.request(conn.LocalAddr(), "UDP")
	deadline, _ := ctx.Deadline()
	parser := sip.NewParser()
	buf := make([]byte, 65535)
	for {
		if _, err := conn.Write(raw); err != nil {
			return ProbeResult{Err: err, Refused: probeRefused(err)}
		}
		resend := time.Now().Add(200 * time.Millisecond)
		if resend.After(deadline) {
			resend = deadline
		}
		_ = conn.SetReadDeadline(resend)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				if probeRefused(err) {
					return ProbeResult{Err: err, Refused: true}
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				return ProbeResult{Err: err}
			}
			if code, ok := match(parser, buf[:n], callID, cseq); ok {
				return ProbeResult{Status: code}
			}
		}
		if !time.Now().Before(deadline) {
			return ProbeResult{Err: errors.New("no answer within timeout")}
		}
	}
}

// probeStream connects, sends, and reads one final answer over TCP or TLS.
func (p *Prober) probeStream(ctx context.Context) ProbeResult {
	d := net.Dialer{}
	if p.Source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: p.Source.AsSlice()}
	}
	var conn net.Conn
	var err error
	if p.Transport == "TLS" {
		// A probe checks liveness, not identity; the call path verifies.
		td := tls.Dialer{NetDialer: &d, Config: &tls.Config{InsecureSkipVerify: true}} //nolint:gosec
		conn, err = td.DialContext(ctx, "tcp", p.Target.String())
	} else {
		conn, err = d.DialContext(ctx, "tcp", p.Target.String())
	}
	if err != nil {
		return ProbeResult{Err: err, Refused: probeRefused(err)}
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	raw, callID, cseq := p.request(conn.LocalAddr(), p.Transport)
	if _, err := conn.Write(raw); err != nil {
		return ProbeResult{Err: err, Refused: probeRefused(err)}
	}
	parser := sip.NewParser()
	r := bufio.NewReader(conn)
	for {
		msg, err := readStreamMessage(r)
		if err != nil {
			return ProbeResult{Err: err, Refused: probeRefused(err)}
		}
		if code, ok := match(parser, msg, callID, cseq); ok {
			return ProbeResult{Status: code}
		}
	}
}

// readStreamMessage reads one SIP message from a stream: headers up to the
// empty line, then Content-Length bytes. Bounded: 64 KiB.
func readStreamMessage(r *bufio.Reader) ([]byte, error) {
	var msg []byte
	clen := 0
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return nil, err
		}
		if len(msg) == 0 && (string(line) == "\r\n" || string(line) == "\n") {
			continue // keep-alive CRLFs
		}
		msg = append(msg, line...)
		if len(msg) > 65535 {
			return nil, errors.New("message too large")
		}
		t := strings.TrimSpace(string(line))
		if t == "" {
			break
		}
		if name, val, ok := strings.Cut(t, ":"); ok {
			if n := strings.ToLower(strings.TrimSpace(name)); n == "content-length" || n == "l" {
				clen, _ = strconv.Atoi(strings.TrimSpace(val))
			}
		}
	}
	if clen < 0 || clen > 65535 {
		return nil, errors.New("bad Content-Length")
	}
	body := make([]byte, clen)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return append(msg, body...), nil
}

func probeRefused(err error) bool {
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}
