// Package callgen is a SIP call generator (a UAC) for end-to-end tests, demos
// and benchmarks of sipbalancer. It places real calls (INVITE, ACK, optional
// re-INVITE, BYE) through a proxy and reports per-call results; with
// Config.RTP each call also carries RTP both ways (pkg/rtpstream) and the
// results say what the media did: loss, jitter, echoes and round trip.
//
// Requests inside a dialog are built here, not by sipgo's dialog helpers, so
// the rules a proxy under test depends on are explicit: the route set is the
// 2xx's Record-Route list reversed (RFC 3261 12.1.2), in-dialog requests go to
// the first Route (loose routing, 12.2.1.1), and the ACK for a 2xx is built
// per 13.2.2.4 and re-sent for every retransmitted 2xx.
package callgen

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"

	"github.com/sipbalancer/sipbalancer/pkg/rtpstream"
)

// Defaults applied to zero-valued Config fields.
const (
	DefaultLocalAddr   = "127.0.0.1:0"
	DefaultTransport   = "udp"
	DefaultConcurrency = 1000
	DefaultTimeout     = 32 * time.Second
	DefaultUser        = "callgen"
	DefaultCodec       = "PCMU"
	// MinRTPHold is the least time each hold lasts with RTP on, so that a
	// call with no hold still carries a few packets (5 at 20 ms).
	MinRTPHold = 100 * time.Millisecond
)

// Config describes the calls to place. Zero values take the defaults noted
// per field; NewConfig also turns ReInvite on.
type Config struct {
	// Target is the proxy address, host:port (port 5060 when omitted). Every
	// out-of-dialog request (INVITE, CANCEL) is sent there.
	Target string
	// Transport is "udp" or "tcp" (default "udp").
	Transport string
	// LocalAddr is the ip:port the UAC listens on, UDP and TCP on the same
	// port (default "127.0.0.1:0"). Via, Contact and the SDP carry it, so
	// in-dialog requests from the far end arrive here. With a wildcard IP the
	// advertised address is the local IP that routes to Target.
	LocalAddr string
	// Calls is the number of calls Run places.
	Calls int
	// Rate is new calls per second, paced with a ticker (ticks are dropped,
	// not bunched, when Concurrency holds new calls back). 0 or less: no
	// pacing, as fast as Concurrency allows.
	Rate float64
	// Concurrency bounds the calls in progress (default 1000).
	Concurrency int
	// Hold is the time between ACK and re-INVITE and between re-INVITE and
	// BYE (default 0).
	Hold time.Duration
	// ReInvite sends a re-INVITE with SDP inside each call (true in NewConfig).
	ReInvite bool
	// Timeout bounds every wait for a transaction's final response, also after
	// a provisional response, when sipgo's Timer B no longer runs (default 32s,
	// Timer B's value).
	Timeout time.Duration
	// RequestURI of the INVITE (default "sip:1000@<Target host>").
	RequestURI string
	// Headers are extra headers added to every initial INVITE.
	Headers []sip.Header
	// User is the user part of From and Contact (default "callgen").
	User string
	// RTP gives each call media: an RTP socket of its own (in the SDP
	// offer), the Codec's packets sent every 20 ms from the answer until
	// the call ends (each hold lasts at least MinRTPHold), and whatever the
	// far end sends counted: sent, received, lost, jitter, echoes and
	// round-trip time when the far end echoes, in CallResult (default
	// false: the offer names a port that is bound but never read).
	RTP bool
	// Codec is what RTP sends, "PCMU" or "PCMA"; the offer lists it first
	// (default "PCMU").
	Codec string
	// Logger receives the UAC's and sipgo's logs (default: discarded).
	Logger *slog.Logger
}

// NewConfig returns a Config for target with the defaults filled in and
// ReInvite on.
func NewConfig(target string) Config {
	c := Config{
		Target:   target,
		Calls:    1,
		ReInvite: true,
	}
	return c.withDefaults()
}

func (c Config) withDefaults() Config {
	if c.Transport == "" {
		c.Transport = DefaultTransport
	}
	c.Transport = strings.ToLower(c.Transport)
	if c.LocalAddr == "" {
		c.LocalAddr = DefaultLocalAddr
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.User == "" {
		c.User = DefaultUser
	}
	if c.Codec == "" {
		c.Codec = DefaultCodec
	}
	if c.Target != "" {
		if _, _, err := net.SplitHostPort(c.Target); err != nil {
			c.Target = net.JoinHostPort(strings.Trim(c.Target, "[]"), strconv.Itoa(sip.DefaultUdpPort))
		}
	}
	if c.RequestURI == "" && c.Target != "" {
		if host, _, err := net.SplitHostPort(c.Target); err == nil {
			if strings.Contains(host, ":") {
				host = "[" + host + "]"
			}
			c.RequestURI = "sip:1000@" + host
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// validate checks a Config that went through withDefaults.
func (c Config) validate() error {
	var errs []error
	if c.Target == "" {
		errs = append(errs, errors.New("callgen: Target is required"))
	} else if _, port, err := net.SplitHostPort(c.Target); err != nil {
		errs = append(errs, fmt.Errorf("callgen: Target %q: %w", c.Target, err))
	} else if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		errs = append(errs, fmt.Errorf("callgen: Target %q: bad port", c.Target))
	}
	if c.Transport != "udp" && c.Transport != "tcp" {
		errs = append(errs, fmt.Errorf("callgen: Transport %q: want udp or tcp", c.Transport))
	}
	if _, _, err := net.SplitHostPort(c.LocalAddr); err != nil {
		errs = append(errs, fmt.Errorf("callgen: LocalAddr %q: %w", c.LocalAddr, err))
	}
	if _, ok := rtpstream.CodecByName(c.Codec); !ok {
		errs = append(errs, fmt.Errorf("callgen: Codec %q: want PCMU or PCMA", c.Codec))
	}
	if strings.ContainsAny(c.User, "@:;<>\" \r\n") {
		errs = append(errs, fmt.Errorf("callgen: User %q is not a plain user name", c.User))
	}
	if c.Hold < 0 {
		errs = append(errs, fmt.Errorf("callgen: Hold %v is negative", c.Hold))
	}
	if c.RequestURI != "" {
		var u sip.Uri
		if err := sip.ParseUri(c.RequestURI, &u); err != nil {
			errs = append(errs, fmt.Errorf("callgen: RequestURI %q: %w", c.RequestURI, err))
		}
	}
	for _, h := range c.Headers {
		if h == nil {
			errs = append(errs, errors.New("callgen: nil entry in Headers"))
			continue
		}
		if strings.ContainsAny(h.Name()+h.Value(), "\r\n") {
			errs = append(errs, fmt.Errorf("callgen: header %q contains CR or LF", h.Name()))
		}
	}
	return errors.Join(errs...)
}
