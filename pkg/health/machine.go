package health

import (
	"time"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
)

// Operator is what an operator asked for a node.
type Operator uint8

const (
	// OperatorNone: health decides.
	OperatorNone Operator = iota
	// OperatorDrain: no new calls; the node's calls go on.
	OperatorDrain
	// OperatorDisable: no new calls; for a node taken out for maintenance.
	OperatorDisable
)

// Reasons a node is not up. They are stable labels (logs, metrics, the
// admin API).
const (
	ReasonNone          = ""
	ReasonOperatorDrain = "operator_drain"
	ReasonOperatorOff   = "operator_disable"
	ReasonProbe         = "probe_failed"
	ReasonProbeRefused  = "probe_refused"
	ReasonProbeBusy     = "probe_503"
	ReasonPassive       = "passive_failures"
	ReasonInvite503     = "invite_503"
	ReasonESLDown       = "esl_disconnected"
	ReasonESLPaused     = "esl_paused"
	ReasonESLNotReady   = "esl_not_ready"
	ReasonESLAtMax      = "esl_max_sessions"
	ReasonProfileDown   = "sip_profile_down"
	ReasonCPU           = "cpu_saturated"
	ReasonMedia         = "media"
)

// probeTrack applies fall/rise thresholds to probe results (Caddy's
// Passes/Fails, HAProxy's rise/fall).
type probeTrack struct {
	down       bool
	fails      int
	passes     int
	refused    bool // the last failure was a refusal
	busy       bool // the last answer was 503
	lastStatus int
	lastRTT    time.Duration
	lastAt     time.Time
	lastErr    string
	probed     bool
}

// add records one probe result and reports whether its down flag changed.
func (p *probeTrack) add(r ProbeResult, fall, rise int, downOnRefused bool) {
	p.probed = true
	p.lastStatus, p.lastRTT, p.lastAt = r.Status, r.RTT, r.At
	p.lastErr = ""
	if r.Err != nil {
		p.lastErr = r.Err.Error()
	}
	p.busy = r.Class == ProbeFull
	switch r.Class {
	case ProbeAlive, ProbeFull:
		p.fails = 0
		p.refused = false
		p.passes++
		if p.down && p.passes >= rise {
			p.down = false
		}
	default:
		p.passes = 0
		p.fails++
		p.refused = r.Refused
		if !p.down && (p.fails >= fall || (r.Refused && downOnRefused)) {
			p.down = true
		}
	}
}

// mediaTrack applies the media probe's thresholds: threshold bad probes in
// a row (loss above max_loss, or no RTP at all) take the node down, rise
// good ones bring it back. A probe that could not be placed or answered
// counts neither way.
type mediaTrack struct {
	down      bool
	bad, good int
	probed    bool
	last      MediaResult
	lastClass MediaClass
	counts    [4]uint64 // probes by MediaClass
	// measured is the last probe that measured media (not MediaError).
	measured    MediaResult
	hasMeasured bool
}

// add records one media probe result.
func (m *mediaTrack) add(r MediaResult, s *settings) {
	c := r.Class(s.mediaMaxLoss)
	m.probed, m.last, m.lastClass = true, r, c
	m.counts[c]++
	if c != MediaError {
		m.measured, m.hasMeasured = r, true
	}
	switch c {
	case MediaError:
	case MediaOK:
		m.bad = 0
		m.good++
		if m.down && m.good >= s.mediaRise {
			m.down = false
		}
	default:
		m.good = 0
		m.bad++
		if !m.down && m.bad >= s.mediaThreshold {
			m.down = true
		}
	}
}

// nodeHealth is everything known about one node. It has no goroutines and
// no clock of its own: decide is a pure function of it and now, so a table
// test covers every combination.
type nodeHealth struct {
	operator Operator

	probe probeTrack
	media mediaTrack

	// passiveDownAt is when passive failures took the node down (zero:
	// not down by passive failures). It clears after the cooldown once
	// probes have passed rise times since.
	passiveDownAt time.Time
	passivePasses int
	// passiveProbeDown: the probes also failed while the node was down by
	// passive failures: it was really dead, so its recovery is the probes'
	// to judge, with no cooldown.
	passiveProbeDown bool
	// fullUntil: an INVITE answered 503 made the node full until then.
	fullUntil time.Time

	esl        bool // the node has an Event Socket configured
	eslStatus  ESLStatus
	eslSeen    bool // a status has been reported
	cpuLowFrom time.Time
}

// settings are the thresholds decide needs.
type settings struct {
	fall, rise         int
	downOnRefused      bool
	cooldown           time.Duration
	eslDownOnFail      bool
	maxAge             time.Duration
	cpuIdleMin         float64
	cpuFor             time.Duration
	checkProfileStatus bool
	// Media probe: loss ratio above which a probe is bad, bad probes in a
	// row that take a node down, good ones that bring it back.
	mediaMaxLoss              float64
	mediaThreshold, mediaRise int
}

// decide computes the node's state and why. Order matters: an operator's
// word first; then anything that says the node is dead; then anything that
// says it is alive but must not get new calls.
func decide(h *nodeHealth, s *settings, now time.Time) (dispatcher.State, string) {
	switch h.operator {
	case OperatorDisable:
		return dispatcher.StateDisabled, ReasonOperatorOff
	case OperatorDrain:
		return dispatcher.StateDraining, ReasonOperatorDrain
	}
	// A wrong password says nothing about the node: it is logged (once,
	// by the client) and the node is judged by its probes.
	if h.esl && s.eslDownOnFail && h.eslSeen && !h.eslStatus.Connected && !h.eslStatus.AuthFailed {
		return dispatcher.StateDown, ReasonESLDown
	}
	if h.probe.down {
		if h.probe.refused {
			return dispatcher.StateDown, ReasonProbeRefused
		}
		return dispatcher.StateDown, ReasonProbe
	}
	if !h.passiveDownAt.IsZero() {
		return dispatcher.StateDown, ReasonPassive
	}
	fresh := h.esl && h.eslStatus.Connected && !h.eslStatus.Load.At.IsZero() && now.Sub(h.eslStatus.Load.At) <= s.maxAge
	if fresh && s.checkProfileStatus && h.eslStatus.ProfileKnown && !h.eslStatus.ProfilesRunning {
		return dispatcher.StateDown, ReasonProfileDown
	}
	// Signalling answers, media does not: callers would hear silence.
	if h.media.down {
		return dispatcher.StateDown, ReasonMedia
	}
	if fresh {
		switch {
		case h.eslStatus.Paused:
			return dispatcher.StateFull, ReasonESLPaused
		case !h.eslStatus.Ready:
			return dispatcher.StateFull, ReasonESLNotReady
		case h.eslStatus.Load.MaxSessions > 0 && h.eslStatus.Load.Sessions >= h.eslStatus.Load.MaxSessions:
			return dispatcher.StateFull, ReasonESLAtMax
		}
		if s.cpuIdleMin > 0 && !h.cpuLowFrom.IsZero() && now.Sub(h.cpuLowFrom) >= s.cpuFor {
			return dispatcher.StateFull, ReasonCPU
		}
	}
	if h.probe.busy {
		return dispatcher.StateFull, ReasonProbeBusy
	}
	if now.Before(h.fullUntil) {
		// The node said 503 to an INVITE. Fresh Event Socket figures
		// showing room (checked above: not paused, ready, below max)
		// overrule it: FreeSWITCH's figures are the better truth.
		if !fresh {
			return dispatcher.StateFull, ReasonInvite503
		}
	}
	return dispatcher.StateUp, ReasonNone
}

// observeProbe feeds a probe result, including what it means for a node
// taken down by passive failures: after the cooldown, rise good probes in a
// row bring it back.
func (h *nodeHealth) observeProbe(r ProbeResult, s *settings) {
	wasDown := h.probe.down
	h.probe.add(r, s.fall, s.rise, s.downOnRefused)
	if h.passiveDownAt.IsZero() {
		return
	}
	if h.probe.down {
		h.passiveProbeDown = true
	}
	if wasDown && !h.probe.down && h.passiveProbeDown {
		// Dead and back (a restarted or resumed process): the probes'
		// rise threshold is the whole test.
		h.passiveDownAt, h.passivePasses, h.passiveProbeDown = time.Time{}, 0, false
		return
	}
	if r.Class == ProbeAlive || r.Class == ProbeFull {
		if r.At.Sub(h.passiveDownAt) >= s.cooldown {
			h.passivePasses++
		}
		if h.passivePasses >= s.rise {
			h.passiveDownAt, h.passivePasses, h.passiveProbeDown = time.Time{}, 0, false
		}
		return
	}
	h.passivePasses = 0
}

// observeESL feeds an Event Socket status.
func (h *nodeHealth) observeESL(st ESLStatus, s *settings, now time.Time) {
	h.eslSeen = true
	h.eslStatus = st
	if s.cpuIdleMin <= 0 || !st.Connected || st.Load.At.IsZero() {
		h.cpuLowFrom = time.Time{}
		return
	}
	if st.Load.IdleCPU < s.cpuIdleMin {
		if h.cpuLowFrom.IsZero() {
			h.cpuLowFrom = st.Load.At
		}
	} else {
		h.cpuLowFrom = time.Time{}
	}
}
