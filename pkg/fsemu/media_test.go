package fsemu

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/rtpstream"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// rtpPeer is the caller's media: an RTP session on loopback.
func rtpPeer(t *testing.T, tagged bool) *rtpstream.Session {
	t.Helper()
	s, err := rtpstream.Listen(loopback, rtpstream.PCMU, tagged)
	require.NoError(t, err)
	t.Cleanup(func() { s.Close() })
	return s
}

func offerFor(port int, formats string) []byte {
	return fmt.Appendf(nil, "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"+
		"m=audio %d RTP/AVP %s 101\r\na=rtpmap:101 telephone-event/8000\r\n", port, formats)
}

// mediaCall places a call to user with an SDP offer for the peer's port,
// ACKs the 200 and returns the INVITE, the 200 and the node's media
// address from its answer.
func mediaCall(t *testing.T, p *phone, user string, port int, formats string) (*sip.Request, *sip.Response, netip.AddrPort) {
	t.Helper()
	inv := p.invite()
	inv.Recipient.User = user
	inv.SetBody(offerFor(port, formats))
	rs := p.collect(p.send(inv, p.withVia))
	ok := rs[len(rs)-1]
	require.Equal(t, 200, ok.StatusCode)
	p.ack(inv, ok)
	md, err := rtpstream.ParseSDP(ok.Body())
	require.NoError(t, err)
	return inv, ok, md.Addr
}

// portClosed reports whether nothing holds the UDP port any more.
func portClosed(addr netip.AddrPort) bool {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addr))
	if err != nil {
		return false
	}
	c.Close()
	return true
}

func TestEchoCall(t *testing.T) {
	n := startNode(t, Config{})
	p := newPhone(t, n, "UDP")
	peer := rtpPeer(t, true)
	inv, ok, nodeMedia := mediaCall(t, p, "echo", peer.Port(), "0")
	callID := inv.CallID().Value()

	rec, found := n.Call(callID)
	require.True(t, found)
	assert.True(t, rec.Echo)
	assert.Equal(t, int(nodeMedia.Port()), rec.RTPPort, "the SDP names the bound socket")

	peer.Start(nodeMedia)
	eventually(t, func() bool { return peer.Stats().Echoed >= 10 }, "echoes")

	// Echo off: packets keep arriving at the node, none comes back (one
	// being handled at the switch may still go).
	n.SetEchoEnabled(false)
	assert.False(t, n.EchoEnabled())
	before, _ := n.Call(callID)
	eventually(t, func() bool {
		r, _ := n.Call(callID)
		return r.RTPReceived >= before.RTPReceived+10
	}, "RTP still received")
	after, _ := n.Call(callID)
	assert.LessOrEqual(t, after.RTPSent, before.RTPSent+1, "nothing echoed while echo is off")

	// Echo back on: the same call echoes again.
	n.SetEchoEnabled(true)
	echoed := peer.Stats().Echoed
	eventually(t, func() bool { return peer.Stats().Echoed >= echoed+10 }, "echoes again")

	peer.Stop()
	st := peer.Stats()
	assert.NotEqual(t, uint32(0), st.Recv.SSRC)
	// The echo's timestamps move as ours did: the pause shows as one step
	// (its sequence numbers, the node's own, go on by one).
	assert.LessOrEqual(t, st.Recv.TimestampJumps, int64(1))
	assert.Zero(t, st.Recv.Lost)
	assert.Zero(t, st.Recv.Duplicates)
	assert.Positive(t, st.RTTMin)

	_, bye := p.request(sip.BYE, inv, ok)
	require.Equal(t, 200, bye.StatusCode)
	eventually(t, func() bool { return portClosed(nodeMedia) }, "RTP socket closed at the end of the call")
	s := n.Stats()
	assert.EqualValues(t, 1, s.MediaCalls)
	assert.Zero(t, s.MediaErrors)
	assert.Positive(t, s.RTPReceived)
	assert.Positive(t, s.RTPSent)
}

func TestEchoDisabledFromStart(t *testing.T) {
	n := startNode(t, Config{EchoDisabled: true, EchoUser: "9196"})
	p := newPhone(t, n, "UDP")
	peer := rtpPeer(t, true)
	inv, _, nodeMedia := mediaCall(t, p, "9196", peer.Port(), "8 0")
	peer.Start(nodeMedia)
	eventually(t, func() bool {
		r, _ := n.Call(inv.CallID().Value())
		return r.RTPReceived >= 5
	}, "RTP received")
	assert.Zero(t, peer.Stats().Recv.Received, "the call is up, its media dead")
}

func TestToneCall(t *testing.T) {
	n := startNode(t, Config{RTP: true})
	p := newPhone(t, n, "UDP")
	peer := rtpPeer(t, false)
	inv, ok, nodeMedia := mediaCall(t, p, "1000", peer.Port(), "8 0")

	eventually(t, func() bool { return peer.Stats().Recv.Received >= 10 }, "tone received")
	st := peer.Stats()
	assert.Zero(t, st.Recv.Lost)
	assert.Zero(t, st.Recv.TimestampJumps)
	rec, _ := n.Call(inv.CallID().Value())
	assert.False(t, rec.Echo)

	_, bye := p.request(sip.BYE, inv, ok)
	require.Equal(t, 200, bye.StatusCode)
	eventually(t, func() bool { return portClosed(nodeMedia) }, "RTP socket closed at the end of the call")
}

func TestNoMediaWithoutRTP(t *testing.T) {
	n := startNode(t, Config{})
	p := newPhone(t, n, "UDP")
	inv, _, _ := mediaCall(t, p, "1000", 40000, "0")
	rec, _ := n.Call(inv.CallID().Value())
	assert.Zero(t, rec.RTPPort, "a plain call has no socket")
	assert.Zero(t, n.Stats().MediaCalls)
}

func TestMediaClosedWithTheNode(t *testing.T) {
	n := startNode(t, Config{RTP: true})
	p := newPhone(t, n, "UDP")
	peer := rtpPeer(t, true)
	_, _, tone := mediaCall(t, p, "1000", peer.Port(), "0")
	_, _, echo := mediaCall(t, p, "echo", peer.Port(), "0")
	eventually(t, func() bool { return peer.Stats().Recv.Received > 0 }, "tone flowing")
	require.NoError(t, n.Close())
	assert.True(t, portClosed(tone))
	assert.True(t, portClosed(echo))
}
