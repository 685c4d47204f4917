package guard

import "sync/atomic"

// Reason says why the guard refused a message or a connection. Its String
// is the stable label the lead maps to sipbalancer_sip_rejected_total.
type Reason uint8

// Reasons, in the order of Stats.
const (
	// ReasonNone: not refused.
	ReasonNone Reason = iota
	// ReasonUntrusted: the source is in no trunk (and is not a node), or
	// the request does not meet its trunks' R-URI host or header
	// condition.
	ReasonUntrusted
	// ReasonRateSource: over the source's request or new-call bucket.
	ReasonRateSource
	// ReasonRateGlobal: over the global new-call bucket.
	ReasonRateGlobal
	// ReasonTooLarge: a UDP datagram or TCP message over max_bytes.
	ReasonTooLarge
	// ReasonTooManyHeaders: more header fields than max_headers.
	ReasonTooManyHeaders
	// ReasonHeaderTooLong: a start line or header field (with its folded
	// continuation lines) longer than max_header_bytes.
	ReasonHeaderTooLong
	// ReasonTooManyVias: more Via values than max_vias.
	ReasonTooManyVias
	// ReasonBadFraming: a TCP/TLS stream whose message boundaries cannot
	// be found (no or bad Content-Length, a header line without a colon);
	// sipgo would drop the connection too.
	ReasonBadFraming
	// ReasonTCPLimit: a connection refused for max_connections or
	// max_per_source.
	ReasonTCPLimit
	// ReasonTCPTimeout: a connection closed by idle_timeout or
	// read_timeout (slow-loris).
	ReasonTCPTimeout

	// NumReasons is the number of reasons, ReasonNone included.
	NumReasons
)

var reasonLabels = [NumReasons]string{
	ReasonNone:           "none",
	ReasonUntrusted:      "untrusted",
	ReasonRateSource:     "rate_source",
	ReasonRateGlobal:     "rate_global",
	ReasonTooLarge:       "too_large",
	ReasonTooManyHeaders: "too_many_headers",
	ReasonHeaderTooLong:  "header_too_long",
	ReasonTooManyVias:    "too_many_vias",
	ReasonBadFraming:     "bad_framing",
	ReasonTCPLimit:       "tcp_limit",
	ReasonTCPTimeout:     "tcp_timeout",
}

// String returns the metric label of r.
func (r Reason) String() string {
	if r < NumReasons {
		return reasonLabels[r]
	}
	return "unknown"
}

// Counters counts refusals by reason. The zero value is ready; it is safe
// for concurrent use and never allocates.
type Counters struct {
	n [NumReasons]atomic.Uint64
	// onAdd, when set, is told of every refusal (Config.OnReject).
	onAdd func(Reason)
}

// Add counts one refusal for r (ReasonNone is ignored).
func (c *Counters) Add(r Reason) {
	if c != nil && r != ReasonNone && r < NumReasons {
		c.n[r].Add(1)
		if c.onAdd != nil {
			c.onAdd(r)
		}
	}
}

// Stats returns a snapshot of the counts.
func (c *Counters) Stats() Stats {
	var s Stats
	if c == nil {
		return s
	}
	for i := range s {
		s[i] = c.n[i].Load()
	}
	return s
}

// Stats holds refusal counts indexed by Reason; Stats[ReasonNone] is always 0.
// Range over it with Reason(i).String() as the label:
//
//	for i, n := range g.Stats() {
//		if r := guard.Reason(i); r != guard.ReasonNone {
//			rejected.WithLabelValues(r.String()).Add(...)
//		}
//	}
type Stats [NumReasons]uint64

// Get returns the count for r.
func (s Stats) Get(r Reason) uint64 {
	if r < NumReasons {
		return s[r]
	}
	return 0
}
