package rtpstream

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/rtp"
)

// ringSize is how many sent packets a Session remembers for matching
// echoes: 1024 packets, about 20 s of audio. An echo older than that is
// not matched.
const ringSize = 1024

// MaxEchoWait bounds how long Stop waits for the echoes of the last packets
// sent.
const MaxEchoWait = 500 * time.Millisecond

// Stats are a Session's figures.
type Stats struct {
	Codec      string
	Sent       int64 // packets sent
	SendErrors int64 // packets the socket refused
	Invalid    int64 // datagrams received that were not RTP
	// Echoed counts packets sent that came back (matched by their tag),
	// each once.
	Echoed int64
	// Round-trip times of the echoed packets.
	RTTMin, RTTMean, RTTMax time.Duration
	// Recv is the received stream: echoes of ours or the far end's own.
	Recv ReceiverStats
	// StoppedAt is when sending (or, without it, receiving) stopped.
	StoppedAt time.Time
}

// Loss is the fraction of the media that did not make it, by the best
// measure at hand: with echoes, the packets sent that did not come back;
// else, with a received stream, its sequence-number loss; else, when
// packets were sent and nothing came back at all, 1.
func (s Stats) Loss() float64 {
	switch {
	case s.Echoed > 0 && s.Sent > 0:
		return max(1-float64(s.Echoed)/float64(s.Sent), 0)
	case s.Recv.Received > 0:
		return s.Recv.LossRatio()
	case s.Sent > 0:
		return 1
	}
	return 0
}

// TailSilence is how long before StoppedAt the last packet arrived: a far
// end whose media stopped in mid-call shows a long one. Zero when nothing
// arrived.
func (s Stats) TailSilence() time.Duration {
	if s.Recv.LastArrival.IsZero() || s.StoppedAt.IsZero() {
		return 0
	}
	return max(s.StoppedAt.Sub(s.Recv.LastArrival), 0)
}

type sentPacket struct {
	index  uint32
	at     time.Time
	valid  bool
	echoed bool
}

// Session is one RTP endpoint: a UDP socket whose incoming stream is
// followed from Listen on, and which sends a Sender's stream to the far end
// every Ptime between Start and Stop. Its methods are safe for concurrent
// use.
type Session struct {
	conn   *net.UDPConn
	sender *Sender // used by the send goroutine only, after Start

	mu       sync.Mutex
	recv     *Receiver
	st       Stats
	rttSum   time.Duration
	sent     [ringSize]sentPacket
	started  bool
	stopped  bool
	closed   bool
	stop     chan struct{} // closed by Stop: the send loop ends
	sendDone chan struct{}
	recvDone chan struct{}
	echo     chan struct{} // a token per echo, for Stop's wait
}

// Listen binds a UDP socket on ip (any port) and starts receiving. tagged
// makes the packets sent carry tags, so that echoes are recognised.
func Listen(ip netip.Addr, c Codec, tagged bool) (*Session, error) {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		return nil, err
	}
	s := &Session{
		conn:     conn,
		sender:   NewSender(c, tagged),
		recv:     NewReceiver(c.ClockRate, c.SamplesPerPacket()),
		stop:     make(chan struct{}),
		sendDone: make(chan struct{}),
		recvDone: make(chan struct{}),
		echo:     make(chan struct{}, 1),
	}
	s.st.Codec = c.Name
	go s.receive()
	return s, nil
}

// Port is the bound UDP port, to put in the SDP.
func (s *Session) Port() int { return s.conn.LocalAddr().(*net.UDPAddr).Port }

// Start begins sending to remote every Ptime, the first packet at once.
// Only the first call counts; after Stop or Close it does nothing.
func (s *Session) Start(remote netip.AddrPort) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped || s.closed {
		return
	}
	s.started = true
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(remote.Addr().Unmap(), remote.Port()))
	go s.send(dst)
}

func (s *Session) send(dst *net.UDPAddr) {
	defer close(s.sendDone)
	buf := make([]byte, mtu)
	Pace(s.stop, func() { s.sendOne(dst, buf) }, s.sender.Skip)
}

// maxBurst bounds the packets sent at once to catch up after the sending
// goroutine was held up (a loaded machine): 100 ms of audio. Beyond that
// the missed time is skipped: the timestamps jump, as after silence.
const maxBurst = 5

// Pace calls send for packet n at start + n×Ptime, the first at once, until
// stop is closed. It paces by the clock, not by ticks: packets that are
// late are sent at the next wake-up, up to maxBurst at once, so that a
// stall does not thin out the stream; skip is told of the packets beyond
// that, which are left out (Sender.Skip).
func Pace(stop <-chan struct{}, send func(), skip func(n uint32)) {
	start := time.Now()
	var n int64
	t := time.NewTimer(Ptime) // reset before every wait
	defer t.Stop()
	for {
		due := int64(time.Since(start)/Ptime) + 1
		if late := due - n - maxBurst; late > 0 {
			skip(uint32(late))
			n += late
		}
		for ; n < due; n++ {
			send()
		}
		t.Reset(time.Until(start.Add(time.Duration(n) * Ptime)))
		select {
		case <-stop:
			return
		case <-t.C:
		}
	}
}

func (s *Session) sendOne(dst *net.UDPAddr, buf []byte) {
	index := s.sender.Sent()
	p := s.sender.Next()
	n, err := p.MarshalTo(buf)
	// Recorded before the write: on a fast path the echo can be read
	// before WriteToUDP returns.
	s.mu.Lock()
	s.st.Sent++
	s.sent[index%ringSize] = sentPacket{index: index, at: time.Now(), valid: true}
	s.mu.Unlock()
	if err == nil {
		_, err = s.conn.WriteToUDP(buf[:n], dst)
	}
	if err != nil {
		s.mu.Lock()
		s.st.SendErrors++
		s.mu.Unlock()
	}
}

func (s *Session) receive() {
	defer close(s.recvDone)
	buf := make([]byte, 2048)
	var p rtp.Packet
	nonce := s.sender.Nonce()
	for {
		n, _, err := s.conn.ReadFromUDP(buf)
		if err != nil {
			// Closed (the session ended), or an error an unconnected
			// UDP socket does not recover from.
			return
		}
		now := time.Now()
		if err := p.Unmarshal(buf[:n]); err != nil || p.Version != 2 {
			s.mu.Lock()
			s.st.Invalid++
			s.mu.Unlock()
			continue
		}
		s.mu.Lock()
		s.recv.Observe(&p.Header, now)
		if tn, idx, ok := ReadTag(p.Payload); ok && tn == nonce {
			s.matchEcho(idx, now)
		}
		s.mu.Unlock()
	}
}

// matchEcho records the echo of packet idx; s.mu is held.
func (s *Session) matchEcho(idx uint32, now time.Time) {
	sp := &s.sent[idx%ringSize]
	if !sp.valid || sp.index != idx || sp.echoed {
		return
	}
	sp.echoed = true
	rtt := now.Sub(sp.at)
	s.st.Echoed++
	s.rttSum += rtt
	if s.st.RTTMin == 0 || rtt < s.st.RTTMin {
		s.st.RTTMin = rtt
	}
	s.st.RTTMax = max(s.st.RTTMax, rtt)
	select {
	case s.echo <- struct{}{}:
	default:
	}
}

// Stop ends sending. If some packets came back as echoes and others are
// still out, it waits for them: until all are back, or four times the
// longest round trip seen (at least 100 ms, at most MaxEchoWait). With no
// echo at all it does not wait: nothing is coming.
func (s *Session) Stop() {
	s.mu.Lock()
	if s.stopped || s.closed {
		s.mu.Unlock()
		return
	}
	s.stopped = true
	started := s.started
	close(s.stop)
	s.mu.Unlock()
	if !started {
		s.markStopped()
		return
	}
	<-s.sendDone
	s.markStopped()

	s.mu.Lock()
	wait := min(max(4*s.st.RTTMax, 100*time.Millisecond), MaxEchoWait)
	s.mu.Unlock()
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		done := s.st.Echoed == 0 || s.st.Echoed >= s.st.Sent
		s.mu.Unlock()
		if done {
			return
		}
		select {
		case <-s.echo:
		case <-deadline.C:
			return
		}
	}
}

func (s *Session) markStopped() {
	s.mu.Lock()
	if s.st.StoppedAt.IsZero() {
		s.st.StoppedAt = time.Now()
	}
	s.mu.Unlock()
}

// Stats returns the figures so far.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.Recv = s.recv.Stats()
	if st.Echoed > 0 {
		st.RTTMean = s.rttSum / time.Duration(st.Echoed)
	}
	return st
}

// Close stops sending (without waiting for echoes), closes the socket,
// waits for the session's goroutines and returns the final figures. It is
// idempotent.
func (s *Session) Close() Stats {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		if !s.stopped {
			s.stopped = true
			close(s.stop)
		}
		started := s.started
		s.mu.Unlock()
		if started {
			<-s.sendDone
		}
		s.markStopped()
		_ = s.conn.Close()
		<-s.recvDone
	} else {
		s.mu.Unlock()
		<-s.recvDone
	}
	return s.Stats()
}
