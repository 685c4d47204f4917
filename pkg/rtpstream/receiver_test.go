package rtpstream

import (
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// pkt is one packet of a synthetic stream: sequence number, timestamp
// (defaults to seq*160) and SSRC (defaults to 1).
type pkt struct {
	seq  uint16
	ts   *uint32
	ssrc uint32
}

func p(seq uint16) pkt { return pkt{seq: seq} }
func pts(seq uint16, ts uint32) pkt {
	return pkt{seq: seq, ts: &ts}
}
func pssrc(seq uint16, ssrc uint32) pkt { return pkt{seq: seq, ssrc: ssrc} }

func (k pkt) header() *rtp.Header {
	h := &rtp.Header{Version: 2, SequenceNumber: k.seq, Timestamp: uint32(k.seq) * 160, SSRC: 1}
	if k.ts != nil {
		h.Timestamp = *k.ts
	}
	if k.ssrc != 0 {
		h.SSRC = k.ssrc
	}
	return h
}

func TestReceiverContinuity(t *testing.T) {
	tests := []struct {
		name  string
		in    []pkt
		steps []Step
		check func(t *testing.T, obs []Observation, st ReceiverStats)
	}{
		{
			name:  "in order",
			in:    []pkt{p(10), p(11), p(12), p(13)},
			steps: []Step{StepFirst, StepNext, StepNext, StepNext},
			check: func(t *testing.T, _ []Observation, st ReceiverStats) {
				assert.EqualValues(t, 4, st.Received)
				assert.EqualValues(t, 4, st.Expected)
				assert.Zero(t, st.Lost)
				assert.Zero(t, st.TimestampJumps)
			},
		},
		{
			name:  "gap",
			in:    []pkt{p(1), p(2), p(5), p(6)},
			steps: []Step{StepFirst, StepNext, StepGap, StepNext},
			check: func(t *testing.T, obs []Observation, st ReceiverStats) {
				assert.Equal(t, 2, obs[2].Missing)
				assert.False(t, obs[2].TimestampJump, "timestamp moved with the sequence number")
				assert.EqualValues(t, 4, st.Received)
				assert.EqualValues(t, 6, st.Expected)
				assert.EqualValues(t, 2, st.Lost)
				assert.EqualValues(t, 1, st.Gaps)
				assert.InDelta(t, 2.0/6, st.LossRatio(), 1e-9)
			},
		},
		{
			name:  "reordered",
			in:    []pkt{p(1), p(2), p(4), p(3), p(5)},
			steps: []Step{StepFirst, StepNext, StepGap, StepLate, StepNext},
			check: func(t *testing.T, _ []Observation, st ReceiverStats) {
				assert.EqualValues(t, 5, st.Received)
				assert.EqualValues(t, 5, st.Expected)
				assert.Zero(t, st.Lost, "a late packet is not lost")
				assert.EqualValues(t, 1, st.Late)
			},
		},
		{
			name:  "duplicates",
			in:    []pkt{p(1), p(2), p(2), p(3), p(2)},
			steps: []Step{StepFirst, StepNext, StepDuplicate, StepNext, StepDuplicate},
			check: func(t *testing.T, _ []Observation, st ReceiverStats) {
				assert.EqualValues(t, 3, st.Received)
				assert.EqualValues(t, 3, st.Expected)
				assert.EqualValues(t, 2, st.Duplicates)
				assert.Zero(t, st.Lost)
			},
		},
		{
			name:  "wrap",
			in:    []pkt{pts(65534, 0), pts(65535, 160), pts(0, 320), pts(1, 480)},
			steps: []Step{StepFirst, StepNext, StepNext, StepNext},
			check: func(t *testing.T, obs []Observation, st ReceiverStats) {
				assert.True(t, obs[2].Wrapped)
				assert.False(t, obs[2].TimestampJump)
				assert.EqualValues(t, 1, st.Wraps)
				assert.EqualValues(t, 4, st.Expected)
				assert.Zero(t, st.Lost)
			},
		},
		{
			name:  "loss across the wrap",
			in:    []pkt{p(65534), p(1)},
			steps: []Step{StepFirst, StepGap},
			check: func(t *testing.T, obs []Observation, st ReceiverStats) {
				assert.True(t, obs[1].Wrapped)
				assert.Equal(t, 2, obs[1].Missing)
				assert.EqualValues(t, 2, st.Lost)
			},
		},
		{
			name:  "late across the wrap",
			in:    []pkt{p(65535), p(1), p(0)},
			steps: []Step{StepFirst, StepGap, StepLate},
			check: func(t *testing.T, _ []Observation, st ReceiverStats) {
				assert.EqualValues(t, 3, st.Expected)
				assert.Zero(t, st.Lost)
			},
		},
		{
			name:  "late packet older than the first",
			in:    []pkt{p(10), p(11), p(9)},
			steps: []Step{StepFirst, StepNext, StepLate},
			check: func(t *testing.T, _ []Observation, st ReceiverStats) {
				assert.EqualValues(t, 3, st.Expected)
				assert.Zero(t, st.Lost)
			},
		},
		{
			name:  "timestamp jump",
			in:    []pkt{pts(1, 1000), pts(2, 1160), pts(3, 1600), pts(4, 1760)},
			steps: []Step{StepFirst, StepNext, StepNext, StepNext},
			check: func(t *testing.T, obs []Observation, st ReceiverStats) {
				assert.False(t, obs[1].TimestampJump)
				assert.True(t, obs[2].TimestampJump)
				assert.EqualValues(t, 1, st.TimestampJumps)
			},
		},
		{
			name:  "timestamp wraps with the stream",
			in:    []pkt{pts(1, 4294967136), pts(2, 0), pts(3, 160)},
			steps: []Step{StepFirst, StepNext, StepNext},
			check: func(t *testing.T, _ []Observation, st ReceiverStats) {
				assert.Zero(t, st.TimestampJumps)
			},
		},
		{
			name:  "SSRC change",
			in:    []pkt{p(100), p(101), p(102), pssrc(5000, 7), pssrc(5002, 7)},
			steps: []Step{StepFirst, StepNext, StepNext, StepNewSSRC, StepGap},
			check: func(t *testing.T, _ []Observation, st ReceiverStats) {
				assert.EqualValues(t, 1, st.SSRCChanges)
				assert.EqualValues(t, 7, st.SSRC)
				assert.EqualValues(t, 5, st.Received)
				assert.EqualValues(t, 6, st.Expected, "3 of the first source, 3 of the second")
				assert.EqualValues(t, 1, st.Lost)
			},
		},
		{
			name:  "restarted numbering is confirmed by the next packet",
			in:    []pkt{p(10), p(11), p(40000), p(40001), p(40002)},
			steps: []Step{StepFirst, StepNext, StepJump, StepRestart, StepNext},
			check: func(t *testing.T, _ []Observation, st ReceiverStats) {
				assert.EqualValues(t, 1, st.Restarts)
				assert.Zero(t, st.Discarded)
				assert.EqualValues(t, 5, st.Received)
				assert.EqualValues(t, 5, st.Expected)
				assert.Zero(t, st.Lost)
			},
		},
		{
			name:  "a stray packet far away is discarded",
			in:    []pkt{p(10), p(11), p(40000), p(12)},
			steps: []Step{StepFirst, StepNext, StepJump, StepNext},
			check: func(t *testing.T, _ []Observation, st ReceiverStats) {
				assert.EqualValues(t, 1, st.Discarded)
				assert.EqualValues(t, 3, st.Received)
				assert.Zero(t, st.Lost)
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := NewReceiver(8000, 160)
			var obs []Observation
			var steps []Step
			for i, k := range tc.in {
				o := r.Observe(k.header(), t0.Add(time.Duration(i)*Ptime))
				obs = append(obs, o)
				steps = append(steps, o.Step)
			}
			require.Equal(t, tc.steps, steps)
			tc.check(t, obs, r.Stats())
		})
	}
}

// TestReceiverLongStreamWithLoss runs 3 wraps' worth of packets, dropping
// every 50th, and checks the counts against what was dropped.
func TestReceiverLongStreamWithLoss(t *testing.T) {
	r := NewReceiver(8000, 160)
	const n = 3 * 65536
	dropped := 0
	for i := range n {
		if i%50 == 25 {
			dropped++
			continue
		}
		seq := uint16(i + 60000)
		h := &rtp.Header{SequenceNumber: seq, Timestamp: uint32(i) * 160, SSRC: 9}
		r.Observe(h, t0.Add(time.Duration(i)*Ptime))
	}
	st := r.Stats()
	assert.EqualValues(t, n, st.Expected)
	assert.EqualValues(t, n-dropped, st.Received)
	assert.EqualValues(t, dropped, st.Lost)
	assert.EqualValues(t, 3, st.Wraps)
	assert.Zero(t, st.TimestampJumps, "timestamps move with sequence numbers across gaps")
	assert.Zero(t, st.Jitter, "a perfectly paced stream has no jitter")
}

// TestJitter feeds streams whose transit time varies in a known way and
// checks RFC 3550's estimate: with transit alternating between 0 and 5 ms,
// every |D| is 5 ms, so J converges to 5 ms as 5 ms × (1 - (15/16)^n).
func TestJitter(t *testing.T) {
	t.Run("alternating transit", func(t *testing.T) {
		r := NewReceiver(8000, 160)
		const n = 300
		for i := range n {
			transit := time.Duration(i%2) * 5 * time.Millisecond
			h := &rtp.Header{SequenceNumber: uint16(i), Timestamp: uint32(i) * 160, SSRC: 1}
			r.Observe(h, t0.Add(time.Duration(i)*Ptime+transit))
		}
		assert.InDelta(t, 5.0, float64(r.Stats().Jitter)/float64(time.Millisecond), 0.01)
	})
	t.Run("after 16 steps", func(t *testing.T) {
		r := NewReceiver(8000, 160)
		// One jump of the transit time by 8 ms (64 timestamp units) after
		// the first packet, constant after: J1 = 64/16 = 4 units = 0.5 ms,
		// then it decays by 15/16 per packet.
		r.Observe(&rtp.Header{SequenceNumber: 0, Timestamp: 0, SSRC: 1}, t0)
		r.Observe(&rtp.Header{SequenceNumber: 1, Timestamp: 160, SSRC: 1}, t0.Add(Ptime+8*time.Millisecond))
		assert.InDelta(t, 0.5, float64(r.Stats().Jitter)/float64(time.Millisecond), 1e-6)
		for i := 2; i < 18; i++ {
			r.Observe(&rtp.Header{SequenceNumber: uint16(i), Timestamp: uint32(i) * 160, SSRC: 1},
				t0.Add(time.Duration(i)*Ptime+8*time.Millisecond))
		}
		want := 0.5
		for range 16 {
			want *= 15.0 / 16
		}
		assert.InDelta(t, want, float64(r.Stats().Jitter)/float64(time.Millisecond), 1e-6)
	})
	t.Run("constant delay is no jitter", func(t *testing.T) {
		r := NewReceiver(8000, 160)
		for i := range 100 {
			h := &rtp.Header{SequenceNumber: uint16(i), Timestamp: uint32(i) * 160, SSRC: 1}
			r.Observe(h, t0.Add(time.Duration(i)*Ptime+40*time.Millisecond))
		}
		assert.Zero(t, r.Stats().Jitter)
	})
}
