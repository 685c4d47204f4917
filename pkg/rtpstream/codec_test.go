package rtpstream

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Reference values of G.711 (ITU-T G.711 tables): silence, the largest
// positive and negative samples.
func TestG711(t *testing.T) {
	tests := []struct {
		sample     int16
		ulaw, alaw byte
	}{
		{0, 0xff, 0xd5},
		{-1, 0x7f, 0x55},
		{32767, 0x80, 0xaa},
		{-32768, 0x00, 0x2a},
		{8, 0xfe, 0xd5},      // smallest steps: μ-law's is 8, A-law's 16
		{1000, 0xce, 0xfa},   // a mid-range sample
		{-1000, 0x4e, 0x7a},  // its negative
		{31000, 0x81, 0xab},  // near the top
		{16384, 0x8f, 0xa5},  // a segment boundary
		{-16384, 0x0f, 0x3a}, // A-law codes negatives by one's complement: one step lower
	}
	for _, tc := range tests {
		assert.Equal(t, tc.ulaw, ulaw(int(tc.sample)), "μ-law of %d", tc.sample)
		assert.Equal(t, tc.alaw, alaw(int(tc.sample)), "A-law of %d", tc.sample)
	}
}

func TestG711Monotonic(t *testing.T) {
	// Decoding is not needed; monotonicity of the code's magnitude order is
	// a cheap whole-range check: a larger positive sample never gets a
	// smaller segment and mantissa.
	prevU, prevA := -1, -1
	for s := 0; s <= 32767; s += 7 {
		u := int(^ulaw(s) & 0x7f)
		a := int((alaw(s) ^ 0xd5) & 0x7f)
		require.GreaterOrEqual(t, u, prevU, "μ-law at %d", s)
		require.GreaterOrEqual(t, a, prevA, "A-law at %d", s)
		prevU, prevA = u, a
	}
}

func TestCodecs(t *testing.T) {
	for _, name := range []string{"PCMU", "pcma"} {
		c, ok := CodecByName(name)
		require.True(t, ok)
		assert.EqualValues(t, 160, c.SamplesPerPacket())
		frame := c.ToneFrame()
		assert.Len(t, frame, 160)
		// 8 whole periods: the second half repeats the first.
		assert.Equal(t, frame[:80], frame[80:])
		p, ok := CodecByPayloadType(c.PayloadType)
		require.True(t, ok)
		assert.Equal(t, c.Name, p.Name)
	}
	_, ok := CodecByName("G729")
	assert.False(t, ok)
	_, ok = CodecByPayloadType(18)
	assert.False(t, ok)
}
