package fsemu

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/rtp"

	"github.com/sipbalancer/sipbalancer/pkg/rtpstream"
)

// media is the RTP side of one answered call: a UDP socket of its own,
// bound when the call is answered and closed when it ends (or when the node
// closes). An echo call sends every packet it receives back to the caller,
// payload unchanged, under the node's own SSRC, sequence numbers and
// timestamps, as FreeSWITCH's echo application does; any other call (with
// Config.RTP) plays a 400 Hz tone to the caller every 20 ms from the answer
// until the call ends.
type media struct {
	n      *Node
	callID string
	conn   *net.UDPConn
	port   int
	echo   bool
	codec  rtpstream.Codec // of the tone
	remote atomic.Pointer[netip.AddrPort]

	received, sent atomic.Int64

	stop      chan struct{}
	closeOnce sync.Once
	unwatch   func() bool // stops the node-close watch
}

// openMedia binds the call's RTP socket on the node's SIP address and
// starts reading it. offer is the caller's SDP (nil: none; the node then
// sends to where the caller's RTP comes from).
func (n *Node) openMedia(callID string, echo bool, offer []byte) (*media, error) {
	ip := netip.IPv4Unspecified()
	if a, ok := netip.AddrFromSlice(n.udp.LocalAddr().(*net.UDPAddr).IP); ok {
		ip = a.Unmap()
	}
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		n.counters.mediaErrors.Add(1)
		return nil, err
	}
	m := &media{
		n: n, callID: callID, conn: conn, echo: echo,
		port:  conn.LocalAddr().(*net.UDPAddr).Port,
		codec: rtpstream.PCMU,
		stop:  make(chan struct{}),
	}
	if offer != nil {
		if md, err := rtpstream.ParseSDP(offer); err == nil {
			m.setRemote(md.Addr)
			if c, ok := md.Codec(); ok {
				m.codec = c
			}
		}
	}
	// The node closing closes every socket, so Close never waits on a read.
	m.unwatch = context.AfterFunc(n.ctx, m.close)
	n.counters.mediaCalls.Add(1)
	n.goTracked(m.read)
	if n.ctx.Err() != nil {
		m.close()
	}
	return m, nil
}

func (m *media) setRemote(a netip.AddrPort) {
	a = netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	m.remote.Store(&a)
}

// close ends the media: the socket closes, so the read loop and the tone
// stop. Idempotent; nil-safe.
func (m *media) close() {
	if m == nil {
		return
	}
	m.closeOnce.Do(func() {
		close(m.stop)
		if m.unwatch != nil {
			m.unwatch()
		}
		_ = m.conn.Close()
	})
}

// read takes every datagram until the socket closes; an echo call sends
// each RTP packet back while echo is enabled.
func (m *media) read() {
	n := m.n
	buf := make([]byte, 2048)
	out := make([]byte, 2048)
	var in rtp.Packet
	var echo echoStream
	for {
		size, from, err := m.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			// Closed (the call or session ended), or an error an
			// unconnected UDP socket does not recover from.
			return
		}
		if in.Unmarshal(buf[:size]) != nil || in.Version != 2 {
			continue
		}
		m.received.Add(1)
		n.counters.rtpReceived.Add(1)
		if !m.echo || !n.echoOn.Load() {
			continue
		}
		dst := from
		if r := m.remote.Load(); r != nil {
			dst = *r
		} else {
			// No SDP address: send where the caller's RTP comes from
			// (symmetric RTP), and keep it for the rest of the call.
			m.setRemote(from)
		}
		k, err := echo.next(&in).MarshalTo(out)
		if err != nil {
			continue
		}
		if _, err := m.conn.WriteToUDPAddrPort(out[:k], dst); err == nil {
			m.sent.Add(1)
			n.counters.rtpSent.Add(1)
		}
	}
}

// playTone sends the tone every Ptime until the call ends (the node
// closing ends every call's media).
func (m *media) playTone() {
	n := m.n
	s := rtpstream.NewSender(m.codec, false)
	buf := make([]byte, 1500)
	rtpstream.Pace(m.stop, func() {
		p := s.Next()
		dst := m.remote.Load()
		if dst == nil {
			return // nowhere to send yet
		}
		if k, err := p.MarshalTo(buf); err == nil {
			if _, err := m.conn.WriteToUDPAddrPort(buf[:k], *dst); err == nil {
				m.sent.Add(1)
				n.counters.rtpSent.Add(1)
			}
		}
	}, s.Skip)
}

// echoStream is the node's side of an echo: its own SSRC and numbering,
// and timestamps that move as the caller's do.
type echoStream struct {
	started        bool
	out            rtp.Packet
	inFirst, tsOut uint32
}

func (e *echoStream) next(in *rtp.Packet) *rtp.Packet {
	if !e.started {
		e.started = true
		var b [10]byte
		_, _ = rand.Read(b[:])
		e.out.Version = 2
		e.out.SSRC = binary.BigEndian.Uint32(b[0:])
		e.out.SequenceNumber = binary.BigEndian.Uint16(b[4:])
		e.tsOut = binary.BigEndian.Uint32(b[6:])
		e.inFirst = in.Timestamp
		e.out.Marker = true
	} else {
		e.out.SequenceNumber++
		e.out.Marker = false
	}
	e.out.PayloadType = in.PayloadType
	e.out.Timestamp = e.tsOut + (in.Timestamp - e.inFirst)
	e.out.Payload = in.Payload
	return &e.out
}

// SetEchoEnabled turns the echo extension's media on or off (fault
// injection). Off, calls to it are still answered and their RTP still
// read, but nothing is sent back: dead media behind a healthy SIP
// signalling, what no SIP check notices. It applies to calls in progress
// at once.
func (n *Node) SetEchoEnabled(on bool) { n.echoOn.Store(on) }

// EchoEnabled reports whether the echo extension sends RTP back.
func (n *Node) EchoEnabled() bool { return n.echoOn.Load() }

// mediaOfferLocked follows a new SDP offer inside the dialog (re-INVITE,
// UPDATE): the caller's media address may have moved.
func (c *call) mediaOfferLocked(req *sip.Request) {
	if c.media == nil || !hasSDP(req) {
		return
	}
	if md, err := rtpstream.ParseSDP(req.Body()); err == nil {
		c.media.setRemote(md.Addr)
	}
}
