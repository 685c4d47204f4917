package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net"
	"strconv"
	"testing"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
)

func init() {
	// run must not replace sipgo's process-wide logger under the feet of
	// the test UASs' goroutines (a data race).
	setSipgoLogger = func(*slog.Logger) {}
}

// startUAS runs a minimal UDP UAS: 200 with Contact to INVITE (re-INVITE
// too), 200 to BYE, answer code busy for new calls when busy is set.
func startUAS(t *testing.T, busy bool) string {
	t.Helper()
	quiet := slog.New(slog.DiscardHandler)
	ua, err := sipgo.NewUA(
		sipgo.WithUserAgentTransactionLayerOptions(sip.WithTransactionLayerLogger(quiet)),
		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerLogger(quiet)))
	require.NoError(t, err)
	srv, err := sipgo.NewServer(ua, sipgo.WithServerLogger(quiet))
	require.NoError(t, err)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	require.NoError(t, err)
	port := pc.LocalAddr().(*net.UDPAddr).Port

	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		if busy {
			tx.Respond(sip.NewResponseFromRequest(req, 486, "Busy Here", nil))
			return
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", []byte("v=0\r\n"))
		res.AppendHeader(&sip.ContactHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: port}})
		tx.Respond(res)
	})
	srv.OnAck(func(*sip.Request, sip.ServerTransaction) {})
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		tx.Respond(sip.NewResponseFromRequest(req, 200, "OK", nil))
	})
	done := make(chan struct{})
	go func() { defer close(done); srv.ServeUDP(pc) }()
	t.Cleanup(func() {
		pc.Close()
		ua.Close()
		<-done
	})
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
}

func TestRunJSON(t *testing.T) {
	target := startUAS(t, false)
	var out, errOut bytes.Buffer
	code := run([]string{"-target", target, "-calls", "5", "-rate", "100", "-json"}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	var s summary
	require.NoError(t, json.Unmarshal(out.Bytes(), &s), out.String())
	assert.Equal(t, 5, s.Attempted)
	assert.Equal(t, 5, s.Succeeded)
	assert.Zero(t, s.Failed)
	assert.Positive(t, s.SetupP50Ms)
	assert.Contains(t, errOut.String(), "succeeded 5")
}

func TestRunFailures(t *testing.T) {
	target := startUAS(t, true)
	var out, errOut bytes.Buffer
	code := run([]string{"-target", target, "-calls", "2", "-rate", "0"}, &out, &errOut)
	assert.Equal(t, 1, code)
	assert.Contains(t, out.String(), "failed 2")
	assert.Contains(t, out.String(), "INVITE answered 486")
}

func TestUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	assert.Equal(t, 2, run(nil, &out, &errOut))
	assert.Equal(t, 2, run([]string{"-target", "127.0.0.1:5060", "-transport", "sctp"}, &out, &errOut))
	assert.Equal(t, 2, run([]string{"-target", "x", "-H", "nocolon"}, &out, &errOut))
}

func TestRunRTP(t *testing.T) {
	n, err := fsemu.Start(t.Context(), fsemu.Config{RTP: true, Logger: slog.New(slog.DiscardHandler)})
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	var out, errOut bytes.Buffer
	code := run([]string{"-target", n.Addr(), "-calls", "3", "-rate", "0", "-rtp", "-codec", "PCMA", "-json"}, &out, &errOut)
	require.Equal(t, 0, code, errOut.String())
	var s summary
	require.NoError(t, json.Unmarshal(out.Bytes(), &s), out.String())
	require.NotNil(t, s.RTP)
	assert.Equal(t, 3, s.RTP.Calls)
	assert.Positive(t, s.RTP.Received)
	assert.Zero(t, s.RTP.LossMaxPct)
	assert.Zero(t, s.RTP.NoMedia)
	assert.Zero(t, s.SetupFailed)
	assert.Zero(t, s.Cut)
	assert.Contains(t, errOut.String(), "rtp loss   per call p50 0.00 %")
	assert.Equal(t, 2, run([]string{"-target", n.Addr(), "-rtp", "-codec", "G722"}, &out, &errOut))
}
