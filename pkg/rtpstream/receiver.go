package rtpstream

import (
	"math"
	"time"

	"github.com/pion/rtp"
)

// Limits of RFC 3550 Appendix A.1: a forward step of up to maxDropout
// sequence numbers is loss, a step back of up to maxMisorder is a late
// packet, anything else is a jump the source must confirm.
const (
	maxDropout  = 3000
	maxMisorder = 100
	seqMod      = 1 << 16
	window      = 256 // sequence numbers remembered for duplicate detection
)

// Step is how a packet continues the stream it arrived in.
type Step uint8

const (
	// StepFirst: the first packet of the stream.
	StepFirst Step = iota
	// StepNext: the sequence number after the highest one so far.
	StepNext
	// StepGap: ahead of the next expected number; Missing were skipped
	// (lost, or late and still to come).
	StepGap
	// StepLate: behind the highest number so far and not seen before: a
	// reordered packet.
	StepLate
	// StepDuplicate: seen already; not counted again.
	StepDuplicate
	// StepNewSSRC: from another synchronisation source; the stream starts
	// over from this packet.
	StepNewSSRC
	// StepJump: a sequence number far from the others, held on probation:
	// not counted unless the next packet follows it (RFC 3550 A.1).
	StepJump
	// StepRestart: the packet after a jump followed it: the source
	// restarted its numbering, and the stream goes on from there.
	StepRestart
)

func (s Step) String() string {
	switch s {
	case StepFirst:
		return "first"
	case StepNext:
		return "next"
	case StepGap:
		return "gap"
	case StepLate:
		return "late"
	case StepDuplicate:
		return "duplicate"
	case StepNewSSRC:
		return "new_ssrc"
	case StepJump:
		return "jump"
	case StepRestart:
		return "restart"
	}
	return "unknown"
}

// Observation is what Receiver.Observe found about one packet.
type Observation struct {
	Step Step
	// Missing is the number of sequence numbers skipped (StepGap).
	Missing int
	// Wrapped: the sequence number went past 65535 to the start again.
	Wrapped bool
	// TimestampJump: the timestamp moved by other than the sequence step
	// times the samples of one packet (a changed packet size, a clock
	// jump, or silence suppression).
	TimestampJump bool
}

// ReceiverStats are the figures of one received stream.
type ReceiverStats struct {
	SSRC uint32 // the current source
	// Received counts packets taken into the stream: duplicates and
	// packets on probation that were never confirmed are left out.
	Received int64
	// Expected is the span of sequence numbers seen (RFC 3550 A.3),
	// summed over the stream's restarts and sources.
	Expected int64
	// Lost is Expected - Received, never below zero.
	Lost int64

	Gaps           int64 // packets that skipped sequence numbers
	Late           int64 // reordered packets
	Duplicates     int64
	Wraps          int64 // sequence number wraps
	TimestampJumps int64
	SSRCChanges    int64
	Restarts       int64 // confirmed jumps
	Discarded      int64 // jumped packets never confirmed

	// Jitter is RFC 3550's interarrival jitter estimate (A.8), in time.
	Jitter time.Duration

	FirstArrival, LastArrival time.Time
}

// LossRatio is Lost / Expected (0 when nothing was expected).
func (s ReceiverStats) LossRatio() float64 {
	if s.Expected <= 0 {
		return 0
	}
	return float64(s.Lost) / float64(s.Expected)
}

// Receiver follows one incoming stream. It is not safe for concurrent use.
type Receiver struct {
	clock float64 // timestamp units per second
	spp   uint32  // timestamp step of one packet

	started bool
	ssrc    uint32

	// The current run: extended sequence numbers (cycles*65536 + seq).
	base, max int64
	cycles    int64
	received  int64
	seen      [window / 64]uint64

	// lastTS is the timestamp of the packet with the highest sequence
	// number, for the timestamp continuity check.
	lastTS uint32

	probation bool
	badSeq    uint16

	// Runs before the current one (restarts, other sources).
	priorExpected, priorReceived int64

	// Jitter (A.8), in timestamp units.
	jitter      float64
	prevArrival time.Time
	prevTS      uint32
	haveTransit bool

	st ReceiverStats
}

// NewReceiver returns a receiver for a stream with the given RTP clock rate
// and timestamp step per packet (8000 and 160 for 20 ms of G.711).
func NewReceiver(clockRate, samplesPerPacket uint32) *Receiver {
	return &Receiver{clock: float64(clockRate), spp: samplesPerPacket}
}

// Observe takes one packet's header and its arrival time.
func (r *Receiver) Observe(h *rtp.Header, arrival time.Time) Observation {
	if r.st.FirstArrival.IsZero() {
		r.st.FirstArrival = arrival
	}
	r.st.LastArrival = arrival
	if !r.started {
		r.started = true
		r.ssrc = h.SSRC
		r.startRun(h, arrival, 1)
		return Observation{Step: StepFirst}
	}
	if h.SSRC != r.ssrc {
		r.st.SSRCChanges++
		r.ssrc = h.SSRC
		r.endRun()
		r.haveTransit = false
		r.startRun(h, arrival, 1)
		return Observation{Step: StepNewSSRC}
	}

	seq := h.SequenceNumber
	maxSeq := uint16(r.max)
	delta := seq - maxSeq // mod 2^16
	switch {
	case delta == 0:
		r.st.Duplicates++
		return Observation{Step: StepDuplicate}
	case delta < maxDropout:
		r.probation = false
		var o Observation
		if seq < maxSeq {
			r.cycles += seqMod
			r.st.Wraps++
			o.Wrapped = true
		}
		ext := r.cycles + int64(seq)
		o.Step = StepNext
		if delta > 1 {
			o.Step, o.Missing = StepGap, int(delta)-1
			r.st.Gaps++
		}
		if h.Timestamp-r.lastTS != uint32(delta)*r.spp {
			o.TimestampJump = true
			r.st.TimestampJumps++
		}
		r.advance(ext)
		r.lastTS = h.Timestamp
		r.count(h, arrival)
		return o
	case delta <= seqMod-maxMisorder:
		// Far from the stream: a restarted source, or a stray packet.
		if r.probation && seq == r.badSeq {
			r.st.Restarts++
			r.st.Discarded-- // the held packet counts after all
			r.endRun()
			r.haveTransit = false
			r.startRun(h, arrival, 2)
			r.probation = false
			return Observation{Step: StepRestart}
		}
		r.probation = true
		r.badSeq = seq + 1
		r.st.Discarded++
		return Observation{Step: StepJump}
	default:
		// Behind the highest number: late, or a duplicate.
		back := int64(maxSeq - seq)
		ext := r.max - back
		if back < window && r.isSeen(ext) {
			r.st.Duplicates++
			return Observation{Step: StepDuplicate}
		}
		if back < window {
			r.mark(ext)
		}
		if ext < r.base {
			r.base = ext // it started earlier than its first arrival said
		}
		r.st.Late++
		r.count(h, arrival)
		return Observation{Step: StepLate}
	}
}

// startRun begins counting at h; held is the number of packets the run
// starts with (2 after a confirmed jump: the held packet and this one).
func (r *Receiver) startRun(h *rtp.Header, arrival time.Time, held int64) {
	r.cycles = seqMod // keeps extended numbers positive when base is seq-1
	ext := r.cycles + int64(h.SequenceNumber)
	r.base, r.max = ext-held+1, ext
	r.seen = [window / 64]uint64{}
	for e := r.base; e <= ext; e++ {
		r.mark(e)
	}
	r.received = held - 1
	r.lastTS = h.Timestamp
	r.probation = false
	r.count(h, arrival)
}

// endRun folds the current run into the totals.
func (r *Receiver) endRun() {
	r.priorExpected += r.max - r.base + 1
	r.priorReceived += r.received
}

func (r *Receiver) advance(ext int64) {
	if ext-r.max >= window {
		r.seen = [window / 64]uint64{}
	} else {
		for e := r.max + 1; e < ext; e++ {
			r.unmark(e)
		}
	}
	r.max = ext
	r.mark(ext)
}

func (r *Receiver) count(h *rtp.Header, arrival time.Time) {
	r.received++
	// RFC 3550 A.8: D = (Rj - Ri) - (Sj - Si) in timestamp units, the
	// timestamp difference taken modulo 2^32 so that a wrap is a step.
	if r.haveTransit {
		d := arrival.Sub(r.prevArrival).Seconds()*r.clock - float64(int32(h.Timestamp-r.prevTS))
		r.jitter += (math.Abs(d) - r.jitter) / 16
	}
	r.haveTransit = true
	r.prevArrival, r.prevTS = arrival, h.Timestamp
}

func (r *Receiver) mark(ext int64)   { i := ext % window; r.seen[i/64] |= 1 << (i % 64) }
func (r *Receiver) unmark(ext int64) { i := ext % window; r.seen[i/64] &^= 1 << (i % 64) }
func (r *Receiver) isSeen(ext int64) bool {
	i := ext % window
	return r.seen[i/64]&(1<<(i%64)) != 0
}

// Stats returns the figures so far.
func (r *Receiver) Stats() ReceiverStats {
	st := r.st
	st.SSRC = r.ssrc
	if r.started {
		st.Received = r.priorReceived + r.received
		st.Expected = r.priorExpected + r.max - r.base + 1
	}
	st.Lost = max(st.Expected-st.Received, 0)
	st.Jitter = time.Duration(r.jitter / r.clock * float64(time.Second))
	return st
}
