package callgen

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

func startFsemu(t *testing.T, cfg fsemu.Config) *fsemu.Node {
	t.Helper()
	cfg.Logger = slog.New(slog.DiscardHandler)
	n, err := fsemu.Start(t.Context(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	return n
}

func echoURI(n *fsemu.Node) string { return "sip:echo@" + n.Addr() }

// TestRTPCall: media both ways with a node that plays a tone; both ends
// count the other's packets, none lost on loopback.
func TestRTPCall(t *testing.T) {
	n := startFsemu(t, fsemu.Config{RTP: true})
	cfg := NewConfig(n.Addr())
	cfg.RTP = true
	cfg.Hold = 0 // raised to MinRTPHold per hold
	u := newUAC(t, cfg)

	r := u.Call(testCtx(t))
	require.True(t, r.OK(), "%+v", r)
	require.True(t, r.RTP)
	assert.Empty(t, r.RTPError)
	assert.GreaterOrEqual(t, r.RTPSent, int64(8), "two holds of at least 100 ms at 20 ms")
	assert.Positive(t, r.RTPReceived)
	assert.Zero(t, r.RTPLost)
	assert.Zero(t, r.RTPLoss)
	assert.Zero(t, r.RTPEchoed, "a tone is not an echo")
	assert.False(t, r.RTPStopped)
	assert.Less(t, r.RTPJitter, 20*time.Millisecond)

	// The node read what we sent; the last packet may still be unread when
	// our BYE closes its socket.
	rec, ok := n.Call(r.CallID)
	require.True(t, ok)
	assert.LessOrEqual(t, rec.RTPReceived, r.RTPSent)
	assert.GreaterOrEqual(t, rec.RTPReceived, r.RTPSent-1)
	assert.NotZero(t, rec.RTPPort)
}

func TestRTPEcho(t *testing.T) {
	for _, codec := range []string{"PCMU", "PCMA"} {
		t.Run(codec, func(t *testing.T) {
			n := startFsemu(t, fsemu.Config{})
			cfg := NewConfig(n.Addr())
			cfg.RTP, cfg.Codec, cfg.ReInvite = true, codec, false
			cfg.RequestURI = echoURI(n)
			cfg.Hold = 300 * time.Millisecond
			u := newUAC(t, cfg)

			r := u.Call(testCtx(t))
			require.True(t, r.OK(), "%+v", r)
			assert.Equal(t, r.RTPSent, r.RTPEchoed, "every packet came back")
			assert.Equal(t, r.RTPSent, r.RTPReceived)
			assert.Zero(t, r.RTPLoss)
			assert.Positive(t, r.RTPRTT)
		})
	}
}

// TestRTPEchoDead: the node answers, and sends no media back. SIP says the
// call is fine; the media says it is not.
func TestRTPEchoDead(t *testing.T) {
	n := startFsemu(t, fsemu.Config{EchoDisabled: true})
	cfg := NewConfig(n.Addr())
	cfg.RTP, cfg.ReInvite = true, false
	cfg.RequestURI = echoURI(n)
	u := newUAC(t, cfg)

	start := time.Now()
	r := u.Call(testCtx(t))
	require.True(t, r.OK(), "%+v", r)
	assert.Positive(t, r.RTPSent)
	assert.Zero(t, r.RTPReceived)
	assert.Equal(t, 1.0, r.RTPLoss)
	assert.Less(t, time.Since(start), MinRTPHold+time.Second, "no wait for echoes that never came")
}

// TestRTPStopped: the node carrying the call dies in mid-call; its media
// stops, and the result says so.
func TestRTPStopped(t *testing.T) {
	n := startFsemu(t, fsemu.Config{RTP: true})
	cfg := NewConfig(n.Addr())
	cfg.RTP, cfg.ReInvite = true, false
	cfg.Hold = 2 * time.Second
	cfg.Timeout = time.Second
	u := newUAC(t, cfg)

	res := make(chan CallResult, 1)
	go func() { res <- u.Call(context.Background()) }()
	require.Eventually(t, func() bool {
		calls := n.Calls()
		return len(calls) == 1 && calls[0].RTPSent >= 5
	}, waitTimeout, 5*time.Millisecond, "media flowing")
	require.NoError(t, n.Close())

	var r CallResult
	select {
	case r = <-res:
	case <-time.After(waitTimeout):
		t.Fatal("call did not end")
	}
	assert.False(t, r.OK(), "the BYE went unanswered")
	assert.True(t, r.RTPStopped, "%+v", r)
	assert.Positive(t, r.RTPReceived)
}

func TestRunRTPReport(t *testing.T) {
	n := startFsemu(t, fsemu.Config{RTP: true})
	cfg := NewConfig(n.Addr())
	cfg.Calls, cfg.Rate, cfg.RTP = 5, 0, true
	rep, err := Run(testCtx(t), cfg)
	require.NoError(t, err)
	require.Equal(t, 5, rep.Succeeded)
	require.NotNil(t, rep.RTP)
	assert.Equal(t, 5, rep.RTP.Calls)
	assert.Zero(t, rep.RTP.NoMedia)
	assert.Zero(t, rep.RTP.WithLoss)
	assert.Zero(t, rep.RTP.LossMax)
	assert.Positive(t, rep.RTP.Sent)
	assert.Positive(t, rep.RTP.Received)

	cfg.RTP = false
	rep, err = Run(testCtx(t), cfg)
	require.NoError(t, err)
	assert.Nil(t, rep.RTP)
}

func TestRTPConfig(t *testing.T) {
	cfg := NewConfig("127.0.0.1:5060")
	cfg.Codec = "G729"
	_, err := NewUAC(cfg)
	require.ErrorContains(t, err, `Codec "G729"`)
	cfg = NewConfig("127.0.0.1:5060")
	cfg.User = "a@b"
	_, err = NewUAC(cfg)
	require.ErrorContains(t, err, "User")

	// The offer lists the configured codec first.
	cfg = NewConfig("127.0.0.1:5060")
	cfg.Codec = "PCMA"
	u := newUAC(t, cfg)
	assert.Contains(t, string(u.sdp(1, 4000)), "m=audio 4000 RTP/AVP 8 0 101\r\n")
}
