package rtpstream

import (
	"math"
	"math/bits"
	"strings"
	"time"
)

// Ptime is the packetisation interval: 20 ms of audio per packet, the
// default of FreeSWITCH and of nearly every SIP device for G.711.
const Ptime = 20 * time.Millisecond

// Codec is a G.711 variant: static payload type, 8 kHz clock, one byte per
// sample.
type Codec struct {
	Name        string // "PCMU" or "PCMA", as in an SDP rtpmap
	PayloadType uint8  // 0 or 8 (RFC 3551)
	ClockRate   uint32 // 8000

	encode func(int) byte
}

// The two codecs every SIP device and FreeSWITCH speak.
var (
	PCMU = Codec{Name: "PCMU", PayloadType: 0, ClockRate: 8000, encode: ulaw}
	PCMA = Codec{Name: "PCMA", PayloadType: 8, ClockRate: 8000, encode: alaw}
)

// CodecByName returns PCMU or PCMA (case-insensitive).
func CodecByName(name string) (Codec, bool) {
	switch strings.ToUpper(name) {
	case "PCMU":
		return PCMU, true
	case "PCMA":
		return PCMA, true
	}
	return Codec{}, false
}

// CodecByPayloadType returns the codec of a static payload type, 0 or 8.
func CodecByPayloadType(pt uint8) (Codec, bool) {
	switch pt {
	case PCMU.PayloadType:
		return PCMU, true
	case PCMA.PayloadType:
		return PCMA, true
	}
	return Codec{}, false
}

// SamplesPerPacket is the RTP timestamp step of one packet (160 at 8 kHz).
func (c Codec) SamplesPerPacket() uint32 {
	return uint32(uint64(c.ClockRate) * uint64(Ptime) / uint64(time.Second))
}

// Encode turns 16-bit linear samples into the codec's bytes.
func (c Codec) Encode(samples []int16) []byte {
	out := make([]byte, len(samples))
	for i, s := range samples {
		out[i] = c.encode(int(s))
	}
	return out
}

// ToneFrame is one packet's worth (20 ms) of a 400 Hz tone at about
// -12 dBFS in the codec. 400 Hz fits 8 whole periods in 160 samples, so
// the same frame repeated is a continuous tone.
func (c Codec) ToneFrame() []byte {
	n := int(c.SamplesPerPacket())
	samples := make([]int16, n)
	for i := range samples {
		samples[i] = int16(8000 * math.Sin(2*math.Pi*400*float64(i)/float64(c.ClockRate)))
	}
	return c.Encode(samples)
}

// ulaw encodes one linear sample in G.711 μ-law: the magnitude, biased by
// 132 and clipped, is written as a 3-bit segment (the position of its
// highest bit above bit 7) and the 4 bits that follow that bit; the whole
// byte is inverted.
func ulaw(s int) byte {
	const bias, clip = 0x84, 32635
	var sign byte
	if s < 0 {
		sign, s = 0x80, -s
	}
	s = min(s, clip) + bias
	seg := max(bits.Len(uint(s))-8, 0)
	mant := (s >> (seg + 3)) & 0x0f
	return ^(sign | byte(seg)<<4 | byte(mant))
}

// alaw encodes one linear sample in G.711 A-law: the 12-bit magnitude is
// written as a 3-bit segment and 4 mantissa bits (segments 0 and 1 share
// one step size), and the even bits are inverted (XOR 0x55; 0xD5 also sets
// the sign bit for positive samples).
func alaw(s int) byte {
	mask := byte(0xd5)
	s >>= 3
	if s < 0 {
		mask, s = 0x55, -s-1
	}
	s = min(s, 0xfff)
	seg := max(bits.Len(uint(s))-5, 0)
	var mant int
	if seg < 2 {
		mant = (s >> 1) & 0x0f
	} else {
		mant = (s >> seg) & 0x0f
	}
	return (byte(seg)<<4 | byte(mant)) ^ mask
}
