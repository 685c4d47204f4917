package rtpstream

import (
	"testing"

	"github.com/pion/rtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSenderRoundTrip marshals the Sender's packets with pion/rtp, parses
// them back, and checks that the stream is continuous: one SSRC, sequence
// numbers one apart (across the wrap), timestamps 160 apart, the marker on
// the first packet only, and the tag readable.
func TestSenderRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name  string
		codec Codec
		seq   rtp.Sequencer
	}{
		{"PCMU random start", PCMU, rtp.NewRandomSequencer()},
		{"PCMA across the wrap", PCMA, rtp.NewFixedSequencer(65500)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSender(tc.codec, true, tc.seq)
			var prev *rtp.Packet
			wrapped := false
			const n = 1000
			for i := range n {
				p := s.Next()
				raw, err := p.Marshal()
				require.NoError(t, err)
				require.Len(t, raw, 12+160, "12-byte header and 20 ms of G.711")

				var got rtp.Packet
				require.NoError(t, got.Unmarshal(raw))
				if got.SequenceNumber != p.SequenceNumber || string(got.Payload) != string(p.Payload) ||
					got.Version != 2 || got.PayloadType != tc.codec.PayloadType || got.Marker != (i == 0) {
					t.Fatalf("packet %d: sent %v, parsed %v", i, p.Header, got.Header)
				}
				nonce, idx, ok := ReadTag(got.Payload)
				if !ok || nonce != s.Nonce() || idx != uint32(i) {
					t.Fatalf("packet %d: tag %v %d %d", i, ok, nonce, idx)
				}
				if prev != nil {
					if got.SSRC != prev.SSRC || got.SequenceNumber != prev.SequenceNumber+1 || got.Timestamp != prev.Timestamp+160 {
						t.Fatalf("packet %d does not follow %v: %v", i, prev.Header, got.Header)
					}
					wrapped = wrapped || got.SequenceNumber == 0
				}
				prev = &got
			}
			assert.EqualValues(t, n, s.Sent())
			if tc.name == "PCMA across the wrap" {
				assert.True(t, wrapped)
			}
		})
	}
}

func TestUntaggedSenderSendsTheTone(t *testing.T) {
	s := NewSender(PCMA, false)
	p := s.Next()
	assert.Equal(t, PCMA.ToneFrame(), p.Payload)
	_, _, ok := ReadTag(p.Payload)
	assert.False(t, ok)
}

func TestTag(t *testing.T) {
	buf := make([]byte, TagSize)
	PutTag(buf, 0xdeadbeef, 42)
	n, i, ok := ReadTag(buf)
	require.True(t, ok)
	assert.EqualValues(t, 0xdeadbeef, n)
	assert.EqualValues(t, 42, i)
	_, _, ok = ReadTag(buf[:TagSize-1])
	assert.False(t, ok, "too short")
	_, _, ok = ReadTag(PCMU.ToneFrame())
	assert.False(t, ok, "audio is not a tag")
}

func TestSenderSkip(t *testing.T) {
	s := NewSender(PCMU, false)
	a := s.Next()
	s.Skip(3)
	b := s.Next()
	assert.Equal(t, a.SequenceNumber+1, b.SequenceNumber, "a pause is not a loss")
	assert.Equal(t, a.Timestamp+4*160, b.Timestamp)
}
