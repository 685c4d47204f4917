package rtpstream

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// echoer reflects RTP like FreeSWITCH's echo application: the payload goes
// back to the sender under the echoer's own SSRC, sequence numbers and
// timestamps. keep decides, per packet index (0, 1, ...), whether it is
// echoed at all.
func echoer(t *testing.T, keep func(i int) bool) netip.AddrPort {
	t.Helper()
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		buf := make([]byte, 2048)
		var in rtp.Packet
		out := rtp.Packet{Header: rtp.Header{Version: 2, SSRC: 0xfeed, SequenceNumber: 65530, Timestamp: 1 << 31}}
		var firstTS uint32
		for i := 0; ; i++ {
			n, from, err := conn.ReadFromUDP(buf)
			if err != nil {
				return
			}
			if in.Unmarshal(buf[:n]) != nil || !keep(i) {
				continue
			}
			if i == 0 {
				firstTS = in.Timestamp
			}
			out.PayloadType, out.Payload = in.PayloadType, in.Payload
			out.Timestamp = 1<<31 + in.Timestamp - firstTS
			raw, _ := out.Marshal()
			out.SequenceNumber++
			_, _ = conn.WriteToUDP(raw, from)
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		wg.Wait()
	})
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

func listen(t *testing.T, c Codec, tagged bool) *Session {
	t.Helper()
	s, err := Listen(loopback, c, tagged)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func sentAtLeast(t *testing.T, s *Session, n int64) {
	t.Helper()
	require.Eventually(t, func() bool { return s.Stats().Sent >= n }, 10*time.Second, 5*time.Millisecond)
}

func TestSessionEcho(t *testing.T) {
	s := listen(t, PCMA, true)
	s.Start(echoer(t, func(int) bool { return true }))
	sentAtLeast(t, s, 10)
	s.Stop()
	st := s.Close()

	assert.Equal(t, "PCMA", st.Codec)
	assert.Equal(t, st.Sent, st.Echoed, "every packet came back")
	assert.Zero(t, st.Loss())
	assert.Positive(t, st.RTTMin)
	assert.LessOrEqual(t, st.RTTMin, st.RTTMean)
	assert.LessOrEqual(t, st.RTTMean, st.RTTMax)
	// The echo is a stream of its own, continuous across its wrap.
	assert.EqualValues(t, 0xfeed, st.Recv.SSRC)
	assert.Equal(t, st.Sent, st.Recv.Received)
	assert.Zero(t, st.Recv.Lost)
	assert.Zero(t, st.Recv.TimestampJumps)
	assert.EqualValues(t, 1, st.Recv.Wraps)
	assert.Zero(t, st.SendErrors)
	assert.False(t, st.StoppedAt.IsZero())
}

// TestSessionEchoLoss: a far end that drops every fourth packet before
// echoing shows a clean stream (its own numbering has no gaps) but a loss of
// one in four by the echoes.
func TestSessionEchoLoss(t *testing.T) {
	s := listen(t, PCMU, true)
	s.Start(echoer(t, func(i int) bool { return i%4 != 3 }))
	sentAtLeast(t, s, 40)
	s.Stop()
	st := s.Close()
	assert.Zero(t, st.Recv.Lost, "the echoed stream itself is continuous")
	assert.InDelta(t, 0.25, st.Loss(), 0.05)
	assert.Less(t, st.Echoed, st.Sent)
}

func TestSessionNoEcho(t *testing.T) {
	// A socket that takes everything and answers nothing: media dead.
	sink, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 0)))
	require.NoError(t, err)
	t.Cleanup(func() { sink.Close() })

	s := listen(t, PCMU, true)
	s.Start(sink.LocalAddr().(*net.UDPAddr).AddrPort())
	sentAtLeast(t, s, 3)
	start := time.Now()
	s.Stop()
	assert.Less(t, time.Since(start), MaxEchoWait, "nothing echoed: no wait for echoes")
	st := s.Close()
	assert.Zero(t, st.Echoed)
	assert.Zero(t, st.Recv.Received)
	assert.InDelta(t, 1.0, st.Loss(), 0, "sent and nothing came back")
}

// TestSessionOneWay: one session sends, another receives; the receiver's
// loss is by sequence numbers.
func TestSessionOneWay(t *testing.T) {
	rx := listen(t, PCMU, false)
	tx := listen(t, PCMU, false)
	tx.Start(netip.AddrPortFrom(loopback, uint16(rx.Port())))
	sentAtLeast(t, tx, 10)
	tx.Stop()
	sent := tx.Close().Sent
	require.Eventually(t, func() bool { return rx.Stats().Recv.Received == sent }, 10*time.Second, 5*time.Millisecond)
	st := rx.Close()
	assert.Zero(t, st.Sent)
	assert.Zero(t, st.Loss())
	assert.Zero(t, st.Recv.Lost)
	assert.Zero(t, st.Recv.Duplicates)
	assert.Less(t, st.Recv.Jitter, 20*time.Millisecond)
}

func TestSessionInvalidAndLifecycle(t *testing.T) {
	s := listen(t, PCMU, false)
	c, err := net.Dial("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port())))
	require.NoError(t, err)
	defer c.Close()
	_, err = c.Write([]byte("not rtp"))
	require.NoError(t, err)
	require.Eventually(t, func() bool { return s.Stats().Invalid == 1 }, 10*time.Second, 5*time.Millisecond)

	// Stop and Close without Start, twice, and Start after Stop: no-ops.
	s.Stop()
	s.Start(netip.AddrPortFrom(loopback, 9))
	st := s.Close()
	assert.Zero(t, st.Sent)
	s.Close()
	var ne net.Error
	_, err = s.conn.WriteToUDP([]byte{0}, net.UDPAddrFromAddrPort(netip.AddrPortFrom(loopback, 9)))
	assert.True(t, errors.Is(err, net.ErrClosed) || errors.As(err, &ne), "socket closed: %v", err)
}

func TestSessionCloseWhileSending(t *testing.T) {
	var n atomic.Int32
	s := listen(t, PCMU, true)
	s.Start(echoer(t, func(int) bool { n.Add(1); return true }))
	sentAtLeast(t, s, 2)
	st := s.Close() // no Stop: no wait for echoes
	assert.Positive(t, st.Sent)
}

// TestPaceCatchesUp: a sender held up for 300 ms sends at most 100 ms of
// the packets it owes at once and skips the rest, then goes on by the
// clock.
func TestPaceCatchesUp(t *testing.T) {
	stop := make(chan struct{})
	var sent atomic.Int32
	var skipped atomic.Uint32
	release := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		Pace(stop, func() {
			if sent.Add(1) == 1 {
				<-release // the first send stalls
			}
		}, func(n uint32) { skipped.Add(n) })
	}()
	stall := time.NewTimer(300 * time.Millisecond) // the stall under test, not a synchronisation
	<-stall.C
	close(release)
	require.Eventually(t, func() bool { return sent.Load() >= 1+maxBurst }, 10*time.Second, time.Millisecond)
	close(stop)
	<-done
	// 300 ms stalled: 15 packets due after the first; 5 sent at once, the
	// other 10 skipped.
	assert.GreaterOrEqual(t, int(skipped.Load()), 8)
	assert.LessOrEqual(t, int(skipped.Load()), 14)
}
