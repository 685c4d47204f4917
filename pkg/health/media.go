package health

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/callgen"
	"github.com/sipbalancer/sipbalancer/pkg/logging"
)

// ProbeHeader marks the media probe's calls, so that a node's dialplan and
// CDRs can tell them from customer calls (FreeSWITCH:
// ${sip_h_X-Sipbalancer-Probe}). They go straight to the node, never
// through the proxy, so the balancer's own call metrics never count them.
const ProbeHeader = "X-Sipbalancer-Probe"

// NodePlaceholder in a media target is replaced by the node's host:port.
const NodePlaceholder = "{node}"

// MediaClass is what one media probe says about a node.
type MediaClass uint8

const (
	// MediaError: the probe call was not answered or carried no media, so
	// it says nothing about media (the OPTIONS probe and passive checks
	// judge SIP); it changes no count toward down or up.
	MediaError MediaClass = iota
	// MediaOK: the media came back with loss at most max_loss.
	MediaOK
	// MediaLoss: some media came back, with loss above max_loss.
	MediaLoss
	// MediaNone: the call was answered and no RTP came back at all.
	MediaNone
)

// MediaClasses are the classes in order, for metrics labels.
var MediaClasses = []MediaClass{MediaOK, MediaLoss, MediaNone, MediaError}

func (c MediaClass) String() string {
	switch c {
	case MediaOK:
		return "ok"
	case MediaLoss:
		return "loss"
	case MediaNone:
		return "no_rtp"
	}
	return "error"
}

// MediaResult is the outcome of one media probe: a short call with RTP to
// the node's echo target.
type MediaResult struct {
	// Status is the final status of the probe's INVITE (0: none).
	Status int
	// Sent, Received and Echoed count RTP packets: ours, all that came
	// back, and ours that came back (matched by their tags).
	Sent, Received, Echoed int64
	// Loss is the media loss ratio: of our packets by their echoes, or of
	// the stream that came back by its sequence numbers when the echo is
	// not byte for byte (rtpstream.Stats.Loss).
	Loss float64
	// Jitter is RFC 3550's interarrival jitter of the stream that came
	// back; RTT the mean round trip of the echoed packets.
	Jitter, RTT time.Duration
	// Err says why the call or its media could not be measured.
	Err error
	At  time.Time
}

// Class judges the result with maxLoss as a ratio (0.2 for 20 %).
func (r MediaResult) Class(maxLoss float64) MediaClass {
	switch {
	case r.Status < 200 || r.Status >= 300 || r.Sent == 0:
		return MediaError
	case r.Received == 0:
		return MediaNone
	case r.Loss > maxLoss:
		return MediaLoss
	}
	return MediaOK
}

// MediaTarget is the Request-URI of a node's probe call: target with
// NodePlaceholder replaced by hostport.
func MediaTarget(target, hostport string) string {
	return strings.ReplaceAll(target, NodePlaceholder, hostport)
}

// MediaProber places the media probe's calls to one node: an INVITE with
// an SDP offer from a local RTP port, sent straight to the node (not
// through the proxy) with the ProbeHeader; after the answer and ACK,
// RTP (G.711, 20 ms) for Duration; the echo measured (loss, jitter, round
// trip); BYE. It reuses pkg/callgen's UAC, which handles 100/180/200, ACK
// (re-sent for retransmitted 2xx), CANCEL of an INVITE left unanswered,
// and BYE on every path once answered, an answer that comes after it gave
// up included. Every wait is bounded by Timeout. Probe is synchronous and
// not safe for concurrent use (one probe in flight per node is the
// caller's loop).
type MediaProber struct {
	NodeID    string
	Target    netip.AddrPort // where the INVITE goes: the node
	Transport string         // "UDP" or "TCP" ("TLS" is not supported)
	// URI is the Request-URI, such as sip:echo@10.0.0.11:5060.
	URI string
	// Source is the local IP for SIP and RTP (invalid: the one that routes
	// to the node).
	Source   netip.Addr
	Codec    string // "PCMU" or "PCMA"
	Duration time.Duration
	Timeout  time.Duration
	Logger   *zap.Logger

	uac *callgen.UAC
}

// ErrMediaTLS is the result of a media probe of a TLS node: the call
// generator the probe uses speaks UDP and TCP only.
var ErrMediaTLS = errors.New("health: the media probe does not support TLS nodes")

// Probe places one probe call and returns what its media showed.
func (p *MediaProber) Probe(ctx context.Context) MediaResult {
	res := p.probe(ctx)
	res.At = time.Now()
	return res
}

func (p *MediaProber) probe(ctx context.Context) MediaResult {
	if p.Logger == nil {
		p.Logger = zap.NewNop()
	}
	if p.Transport == "TLS" {
		return MediaResult{Err: ErrMediaTLS}
	}
	if p.uac == nil {
		u, err := p.newUAC()
		if err != nil {
			return MediaResult{Err: err}
		}
		p.uac = u
	}
	// Setup and hang-up each within Timeout, the media between; past the
	// bound the call is abandoned and hung up within callgen's cleanup
	// budget.
	ctx, cancel := context.WithTimeout(ctx, 2*p.Timeout+p.Duration+time.Second)
	defer cancel()
	r := p.uac.Call(ctx)
	res := MediaResult{
		Status: r.SetupStatus,
		Sent:   r.RTPSent, Received: r.RTPReceived, Echoed: r.RTPEchoed,
		Loss: r.RTPLoss, Jitter: r.RTPJitter, RTT: r.RTPRTT,
	}
	switch {
	case r.SetupStatus < 200 || r.SetupStatus >= 300:
		msg := r.Err
		if msg == "" {
			msg = "probe call not answered"
		}
		res.Err = errors.New(msg)
	case r.RTPError != "":
		res.Err = fmt.Errorf("probe call answered without usable media: %s", r.RTPError)
	}
	if r.SetupStatus >= 200 && r.SetupStatus < 300 && !r.RemoteBye && (r.ByeStatus < 200 || r.ByeStatus >= 300) {
		// The BYE went unanswered or was refused: the node may hold the
		// call until its own RTP timeout.
		p.Logger.Warn("media probe call hung up without a 2xx to its BYE",
			zap.String("node", p.NodeID), zap.String("call_id", r.CallID), zap.Int("bye_status", r.ByeStatus), zap.String("error", r.Err))
	}
	return res
}

func (p *MediaProber) newUAC() (*callgen.UAC, error) {
	local := p.Source
	if !local.IsValid() {
		ip, err := routeTo(p.Target)
		if err != nil {
			return nil, fmt.Errorf("health: media probe: no local address toward %s: %w", p.Target, err)
		}
		local = ip
	}
	return callgen.NewUAC(callgen.Config{
		Target:     p.Target.String(),
		Transport:  strings.ToLower(p.Transport),
		LocalAddr:  net.JoinHostPort(local.String(), "0"),
		Calls:      1,
		Hold:       p.Duration,
		Timeout:    p.Timeout,
		RequestURI: p.URI,
		User:       "sipbalancer",
		Headers: []sip.Header{
			sip.NewHeader(ProbeHeader, "media"),
			sip.NewHeader("User-Agent", "sipbalancer"),
		},
		RTP:    true,
		Codec:  p.Codec,
		Logger: logging.Slog(p.Logger.Named("media")),
	})
}

// Close releases the prober's sockets.
func (p *MediaProber) Close() {
	if p.uac != nil {
		p.uac.Close()
		p.uac = nil
	}
}

// routeTo is the local IP the kernel routes toward target (connecting a
// UDP socket sends nothing).
func routeTo(target netip.AddrPort) (netip.Addr, error) {
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(target))
	if err != nil {
		return netip.Addr{}, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap(), nil
}

// mediaURI is the probe's Request-URI for a node: its own target, else
// the shared one, with NodePlaceholder replaced by the node's configured
// host and port.
func mediaURI(shared, own, host string, port uint16) string {
	t := shared
	if own != "" {
		t = own
	}
	return MediaTarget(t, net.JoinHostPort(host, strconv.Itoa(int(port))))
}
