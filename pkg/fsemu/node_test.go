package fsemu

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConfigValidation(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{Listen: "nonsense"}, "Listen"},
		{Config{Listen: "localhost:5060"}, "must be an IP"},
		{Config{Listen: "127.0.0.1:99999"}, "bad port"},
		{Config{AnswerDelay: -1}, "AnswerDelay"},
		{Config{RingDelay: -1}, "RingDelay"},
		{Config{HoldTime: -1}, "HoldTime"},
		{Config{MaxSessions: -1}, "MaxSessions"},
		{Config{Fail503Ratio: 1.5}, "Fail503Ratio"},
		{Config{DropRatio: -0.1}, "DropRatio"},
		{Config{T1: time.Second, T2: time.Millisecond}, "T2"},
		{Config{MaxRecords: -1}, "MaxRecords"},
		{Config{ESLAddr: "nonsense"}, "ESLAddr"},
		{Config{ESLAuthTimeout: -1}, "ESLAuthTimeout"},
		{Config{HeartbeatInterval: -time.Second}, "HeartbeatInterval"},
		{Config{IdleCPU: 100.5}, "IdleCPU"},
		{Config{IdleCPU: -1}, "IdleCPU"},
		{Config{SessionsPerSecond: -1}, "SessionsPerSecond"},
	} {
		_, err := Start(t.Context(), tc.cfg)
		require.Error(t, err, "%+v", tc.cfg)
		assert.Contains(t, err.Error(), tc.want)
	}
}

func TestListenSamePortUDPAndTCP(t *testing.T) {
	n := startNode(t, Config{})
	for _, tr := range transports {
		p := newPhone(t, n, tr)
		assert.Equal(t, 200, p.options().StatusCode, tr)
	}
	// A fixed port in use is an error, not a silent move.
	_, err := Start(t.Context(), Config{Listen: n.Addr()})
	require.Error(t, err)
}

// TestConcurrentCalls drives many whole calls at once over each transport;
// run with -race it checks the node's locking.
func TestConcurrentCalls(t *testing.T) {
	for _, tc := range []struct {
		transport string
		calls     int
	}{{"UDP", 200}, {"TCP", 100}} {
		t.Run(tc.transport, func(t *testing.T) {
			n := startNode(t, Config{RingDelay: time.Millisecond, AnswerDelay: 2 * time.Millisecond})
			p := newPhone(t, n, tc.transport)
			errs := make(chan error, tc.calls)
			var wg sync.WaitGroup
			for i := 0; i < tc.calls; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					errs <- placeCall(p)
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				require.NoError(t, err)
			}
			eventually(t, func() bool { return n.Stats().ByesReceived == int64(tc.calls) }, "all BYEs")
			st := n.Stats()
			assert.Equal(t, int64(tc.calls), st.Invites)
			assert.Equal(t, int64(tc.calls), st.Answered)
			assert.Equal(t, 0, st.Active)
			calls := n.Calls()
			require.Len(t, calls, tc.calls)
			for _, c := range calls {
				assert.True(t, c.Ended && c.Answered && c.Status == 200, "%+v", c)
			}
		})
	}
}

// placeCall makes one INVITE/ACK/BYE call without touching t, so that it
// can run off the test goroutine.
func placeCall(p *phone) error {
	inv := p.invite()
	tx, err := p.cl.TransactionRequest(context.Background(), inv, p.withVia)
	if err != nil {
		return err
	}
	defer tx.Terminate()
	ok, err := finalOf(tx)
	if err != nil {
		return fmt.Errorf("INVITE: %w", err)
	}
	if ok.StatusCode != 200 {
		return fmt.Errorf("INVITE: got %d", ok.StatusCode)
	}
	if err := p.cl.WriteRequest(p.inDialog(sip.ACK, inv, ok), p.withVia); err != nil {
		return err
	}
	btx, err := p.cl.TransactionRequest(context.Background(), p.inDialog(sip.BYE, inv, ok), p.withVia)
	if err != nil {
		return err
	}
	defer btx.Terminate()
	res, err := finalOf(btx)
	if err != nil {
		return fmt.Errorf("BYE: %w", err)
	}
	if res.StatusCode != 200 {
		return fmt.Errorf("BYE: got %d", res.StatusCode)
	}
	return nil
}

func finalOf(tx sip.ClientTransaction) (*sip.Response, error) {
	timeout := time.NewTimer(waitFor)
	defer timeout.Stop()
	for {
		select {
		case res := <-tx.Responses():
			if !res.IsProvisional() {
				return res, nil
			}
		case <-tx.Done():
			return nil, tx.Err()
		case <-timeout.C:
			return nil, errors.New("timeout")
		}
	}
}

func TestMaxRecords(t *testing.T) {
	n := startNode(t, Config{MaxRecords: 3})
	n.Pause() // quick calls: a 503 each
	p := newPhone(t, n, "UDP")
	var ids []string
	for i := 0; i < 5; i++ {
		inv, _ := p.call()
		ids = append(ids, inv.CallID().Value())
	}
	calls := n.Calls()
	require.Len(t, calls, 3)
	for i, c := range calls {
		assert.Equal(t, ids[i+2], c.CallID, "oldest records go first")
	}
	_, found := n.Call(ids[0])
	assert.False(t, found)
}

func TestStartContextStopsNode(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	n, err := Start(ctx, Config{})
	require.NoError(t, err)
	cancel()
	eventually(t, func() bool { return n.stopping.Load() }, "node stops with its context")
	require.NoError(t, n.Close())
}

// TestCloseLeavesNothingRunning closes a node with calls in every state
// (ringing, waiting for an ACK, on hold with a hang-up timer, a BYE in
// flight) and checks that none of the node's goroutines survive.
func TestCloseLeavesNothingRunning(t *testing.T) {
	n, err := Start(t.Context(), Config{Logger: testLogger(), HoldTime: time.Hour})
	require.NoError(t, err)

	// Ringing for an hour.
	n.SetAnswerDelay(time.Hour)
	p := newPhone(t, n, "UDP")
	tx := p.send(p.invite(), p.withVia)
	waitRinging(t, tx)

	// Answered, never ACKed: 2xx retransmission timer running.
	n.SetAnswerDelay(0)
	r := newRawUDP(t)
	inv := r.invite(n)
	r.sendTo(inv, n.Addr())
	r.nextResponse(200)

	// Confirmed with a one-hour hold timer.
	inv2, rs := p.call()
	p.ack(inv2, rs[len(rs)-1])
	eventually(t, func() bool { return n.Stats().Acks == 1 }, "ACK processed, hold timer armed")

	// A BYE to a black hole: its transaction retransmits for 32s.
	n.SetHoldTime(time.Millisecond)
	inv3, rs := p.call(&sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: "127.0.0.1", Port: 9, UriParams: sip.HeaderParams{{K: "lr", V: ""}}}})
	p.ack(inv3, rs[len(rs)-1])
	eventually(t, func() bool { return n.Stats().ByesSent == 1 }, "BYE sent")
	require.Equal(t, 3, n.Active())

	require.NoError(t, n.Close())
	require.NoError(t, n.Close(), "Close is idempotent")

	// Only goroutines with a node frame count; sipgo's caller UA of this
	// test lives on until cleanup.
	var left []string
	if !assert.Eventually(t, func() bool { left = nodeGoroutines(); return len(left) == 0 }, waitFor, 5*time.Millisecond) {
		t.Fatalf("node goroutines left after Close:\n%s", strings.Join(left, "\n\n"))
	}
}

// nodeGoroutines returns the stacks of live goroutines running code of
// this package's non-test files.
func nodeGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "fsemu.(*Node)") || strings.Contains(g, "fsemu.(*call)") || strings.Contains(g, "fsemu.Start") ||
			strings.Contains(g, "fsemu.(*esl") {
			out = append(out, g)
		}
	}
	return out
}
