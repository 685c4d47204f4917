package fsemu

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"
)

// DefaultVersion is the FreeSWITCH version a node reports (HEARTBEAT's
// FreeSWITCH-Version, `status`, `version`), that of a 1.10.12 package.
const DefaultVersion = "1.10.12-release~64bit"

// DefaultUserAgent is the User-Agent the node puts on every message, the
// string a FreeSWITCH 1.10.12 package announces.
const DefaultUserAgent = "FreeSWITCH-mod_sofia/" + DefaultVersion

// DefaultESLPassword is FreeSWITCH's stock Event Socket password.
const DefaultESLPassword = "ClueCon"

// DefaultMaxRecords is how many call records a node keeps by default.
const DefaultMaxRecords = 200000

// Config describes one emulated FreeSWITCH node. The zero value is usable:
// it listens on 127.0.0.1 on a free port and answers every call at once.
// Defaults are applied in one place (withDefaults) and checked in another
// (validate); the field comments state them.
type Config struct {
	// ID names the node in logs (default "fsemu").
	ID string
	// Listen is the host:port served over UDP and TCP on the same port
	// (default "127.0.0.1:0": a free port, the same number for both).
	Listen string
	// Advertise is the host written into Contact, Via and the SDP
	// (default: the listen host; for a wildcard listen host, the first
	// non-loopback IPv4 address, else 127.0.0.1).
	Advertise string
	// AnswerDelay is the time between 180 Ringing and 200 OK (default 0).
	AnswerDelay time.Duration
	// RingDelay is the time between receiving an INVITE and 180 Ringing
	// (default 0). 100 Trying is always sent at once.
	RingDelay time.Duration
	// HoldTime, when positive, makes the node hang up (BYE through the route
	// set) this long after the ACK (default 0: the caller hangs up).
	HoldTime time.Duration
	// MaxSessions caps calls in progress (ringing plus established). At the
	// cap an INVITE gets 503 Maximum Calls In Progress with Retry-After: 300
	// and no 100 Trying (default 0: unlimited).
	MaxSessions int
	// Fail503Ratio is the fraction of new INVITEs answered 503 Maximum Calls
	// In Progress (fault injection; default 0).
	Fail503Ratio float64
	// DropRatio is the fraction of new INVITEs never answered at all: no 100,
	// and retransmissions are ignored too (fault injection; default 0).
	DropRatio float64
	// OptionsAlways200 keeps OPTIONS at 200 while paused or full, as
	// FreeSWITCH >= 1.11.1 does by default. False gives the 1.11.0 (or
	// sip-options-respond-503-on-busy=true) behaviour: 503 Maximum Calls In
	// Progress with Retry-After: 300 (default false).
	OptionsAlways200 bool
	// Logger receives the node's logs (default: discarded).
	Logger *slog.Logger
	// Seed seeds the fault-injection random source (default 0: random).
	Seed int64

	// T1 starts the 2xx retransmission interval; an unacknowledged 2xx is
	// given up after 64*T1, and the node then sends BYE (default sip.T1,
	// 500ms). It is per node: sipgo's package-wide timers are not touched.
	T1 time.Duration
	// T2 caps the 2xx retransmission interval (default sip.T2, 4s).
	T2 time.Duration
	// MaxRecords bounds the call records kept for Calls; the oldest go first
	// (default DefaultMaxRecords).
	MaxRecords int
	// UserAgent is the User-Agent header value (default
	// "FreeSWITCH-mod_sofia/" + Version, so DefaultUserAgent).
	UserAgent string

	// ESLAddr is the host:port of the node's Event Socket server, inbound
	// mode as mod_event_socket serves it (default "": no Event Socket;
	// "127.0.0.1:0" picks a free port, see Node.ESLAddr).
	ESLAddr string
	// ESLPassword is the password `auth` must give (default
	// DefaultESLPassword, "ClueCon").
	ESLPassword string
	// ESLAuthTimeout is how long a connection may go without a command
	// before it has authenticated; it is then told goodbye and closed
	// (default 25s, FreeSWITCH's).
	ESLAuthTimeout time.Duration
	// HeartbeatInterval is the HEARTBEAT event period; the first one fires
	// at Start (default 20s, FreeSWITCH's event-heartbeat-interval).
	HeartbeatInterval time.Duration
	// IdleCPU is the Idle-CPU percentage reported in HEARTBEAT and
	// `status`, within [0, 100] (default 95; 0 means the default, use
	// Node.SetIdleCPU(0) for a saturated node).
	IdleCPU float64
	// SessionsPerSecond is the configured sessions-per-second budget,
	// reported as Session-Per-Sec when idle (default 30). It is reported
	// only: the node does not throttle.
	SessionsPerSecond int
	// Version is the FreeSWITCH version reported over the Event Socket
	// (default DefaultVersion).
	Version string
	// Hostname is FreeSWITCH-Hostname in events (default: os.Hostname).
	// FreeSWITCH-Switchname is the node's ID.
	Hostname string

	// EchoUser is the Request-URI user of the echo extension: a call to it
	// gets an RTP socket and every RTP packet it receives is sent back,
	// payload unchanged, as FreeSWITCH's echo application does (default
	// "echo").
	EchoUser string
	// EchoDisabled starts the node with the echo off: echo calls are still
	// answered but no RTP comes back (fault injection; see
	// Node.SetEchoEnabled) (default false).
	EchoDisabled bool
	// RTP gives every answered call media, not only echo calls: an RTP
	// socket of its own, bound at the answer and closed at the end of the
	// call, and a 400 Hz tone sent to the caller's SDP address every 20 ms
	// from the answer until the call ends, as FreeSWITCH playing a prompt
	// would (default false: calls other than echo calls get an SDP answer
	// with a port nothing listens on, and no RTP, which keeps benchmarks
	// and tests with tens of thousands of calls free of sockets and
	// packets they do not need).
	RTP bool
}

// withDefaults returns c with every unset field given its default.
func (c Config) withDefaults() Config {
	if c.ID == "" {
		c.ID = "fsemu"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:0"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.T1 == 0 {
		c.T1 = sip.T1
	}
	if c.T2 == 0 {
		c.T2 = sip.T2
	}
	if c.MaxRecords == 0 {
		c.MaxRecords = DefaultMaxRecords
	}
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.UserAgent == "" {
		c.UserAgent = "FreeSWITCH-mod_sofia/" + c.Version
	}
	if c.ESLPassword == "" {
		c.ESLPassword = DefaultESLPassword
	}
	if c.ESLAuthTimeout == 0 {
		c.ESLAuthTimeout = 25 * time.Second
	}
	if c.HeartbeatInterval == 0 {
		c.HeartbeatInterval = 20 * time.Second
	}
	if c.IdleCPU == 0 {
		c.IdleCPU = 95
	}
	if c.SessionsPerSecond == 0 {
		c.SessionsPerSecond = 30
	}
	if c.EchoUser == "" {
		c.EchoUser = "echo"
	}
	if c.Hostname == "" {
		if h, err := os.Hostname(); err == nil && h != "" {
			c.Hostname = h
		} else {
			c.Hostname = "localhost"
		}
	}
	return c
}

// validate reports the first bad field, named as in Config.
func (c Config) validate() error {
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return fmt.Errorf("fsemu: Listen %q: %w", c.Listen, err)
	}
	if host != "" && net.ParseIP(host) == nil {
		return fmt.Errorf("fsemu: Listen %q: host must be an IP address", c.Listen)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return fmt.Errorf("fsemu: Listen %q: bad port", c.Listen)
	}
	var errs []error
	check := func(ok bool, format string, args ...any) {
		if !ok {
			errs = append(errs, fmt.Errorf("fsemu: "+format, args...))
		}
	}
	check(c.AnswerDelay >= 0, "AnswerDelay %v must not be negative", c.AnswerDelay)
	check(c.RingDelay >= 0, "RingDelay %v must not be negative", c.RingDelay)
	check(c.HoldTime >= 0, "HoldTime %v must not be negative", c.HoldTime)
	check(c.MaxSessions >= 0, "MaxSessions %d must not be negative", c.MaxSessions)
	check(validRatio(c.Fail503Ratio), "Fail503Ratio %v must be within [0, 1]", c.Fail503Ratio)
	check(validRatio(c.DropRatio), "DropRatio %v must be within [0, 1]", c.DropRatio)
	check(c.T1 > 0, "T1 %v must be positive", c.T1)
	check(c.T2 >= c.T1, "T2 %v must not be below T1 %v", c.T2, c.T1)
	check(c.MaxRecords > 0, "MaxRecords %d must be positive", c.MaxRecords)
	if c.ESLAddr != "" {
		_, _, err := net.SplitHostPort(c.ESLAddr)
		check(err == nil, "ESLAddr %q: %v", c.ESLAddr, err)
	}
	check(c.ESLAuthTimeout > 0, "ESLAuthTimeout %v must be positive", c.ESLAuthTimeout)
	check(c.HeartbeatInterval > 0, "HeartbeatInterval %v must be positive", c.HeartbeatInterval)
	check(c.IdleCPU >= 0 && c.IdleCPU <= 100, "IdleCPU %v must be within [0, 100]", c.IdleCPU)
	check(c.SessionsPerSecond > 0, "SessionsPerSecond %d must be positive", c.SessionsPerSecond)
	return errors.Join(errs...)
}

func validRatio(r float64) bool { return r >= 0 && r <= 1 }
