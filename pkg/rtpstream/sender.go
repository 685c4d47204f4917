package rtpstream

import (
	"crypto/rand"
	"encoding/binary"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
)

// mtu bounds a packet: a 20 ms G.711 payload (160 bytes) always fits in one.
const mtu = 1200

// TagSize is the number of payload bytes a tag takes: a 2-byte magic, a
// 4-byte stream nonce and a 4-byte packet index.
const TagSize = 10

var tagMagic = [2]byte{'s', 'b'}

// Sender makes one outgoing stream: every Next is the following 20 ms
// packet. It is not safe for concurrent use.
type Sender struct {
	codec Codec
	pk    rtp.Packetizer
	frame []byte
	tag   bool
	nonce uint32
	n     uint32 // packets made
}

// NewSender returns a stream of the codec's 400 Hz tone with a random SSRC,
// first sequence number and first timestamp. With tagged, each payload
// starts with a tag (see ReadTag) so that echoes can be matched to the
// packets sent.
func NewSender(c Codec, tagged bool) *Sender {
	return newSender(c, tagged, rtp.NewRandomSequencer())
}

func newSender(c Codec, tagged bool, seq rtp.Sequencer) *Sender {
	s := &Sender{
		codec: c,
		frame: c.ToneFrame(),
		tag:   tagged,
		nonce: randUint32(),
	}
	s.pk = rtp.NewPacketizer(mtu, c.PayloadType, randUint32(), &codecs.G711Payloader{}, seq, c.ClockRate)
	return s
}

// Codec is the stream's codec.
func (s *Sender) Codec() Codec { return s.codec }

// Nonce identifies the stream in its tags.
func (s *Sender) Nonce() uint32 { return s.nonce }

// Sent is the number of packets made so far; the next packet's index.
func (s *Sender) Sent() uint32 { return s.n }

// Next returns the next packet. The marker bit is set on the first packet
// only: pion's packetizer marks the last packet of every frame, which is
// right for video and wrong for audio (RFC 3551 §4.1: the first packet of
// a talkspurt).
func (s *Sender) Next() *rtp.Packet {
	payload := s.frame
	if s.tag {
		payload = append([]byte(nil), s.frame...)
		PutTag(payload, s.nonce, s.n)
	}
	pkts := s.pk.Packetize(payload, s.codec.SamplesPerPacket())
	p := pkts[0]
	p.Marker = s.n == 0
	s.n++
	return p
}

// Skip leaves out n packets' worth of audio: the next packet's timestamp
// moves on by n packets, its sequence number by one (RFC 3550 §5.1: a
// pause in sending, not a loss).
func (s *Sender) Skip(n uint32) {
	s.pk.SkipSamples(n * s.codec.SamplesPerPacket())
}

// PutTag writes a tag at the start of payload (TagSize bytes at least).
func PutTag(payload []byte, nonce, index uint32) {
	copy(payload, tagMagic[:])
	binary.BigEndian.PutUint32(payload[2:], nonce)
	binary.BigEndian.PutUint32(payload[6:], index)
}

// ReadTag reads the tag PutTag wrote; ok is false for a payload without one.
func ReadTag(payload []byte) (nonce, index uint32, ok bool) {
	if len(payload) < TagSize || payload[0] != tagMagic[0] || payload[1] != tagMagic[1] {
		return 0, 0, false
	}
	return binary.BigEndian.Uint32(payload[2:]), binary.BigEndian.Uint32(payload[6:]), true
}

func randUint32() uint32 {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return binary.BigEndian.Uint32(b[:])
}
