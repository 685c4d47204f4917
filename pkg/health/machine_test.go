package health

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func testSettings() *settings {
	return &settings{
		fall: 2, rise: 2, downOnRefused: true, cooldown: 10 * time.Second,
		eslDownOnFail: true, maxAge: 3 * time.Second,
		cpuIdleMin: 5, cpuFor: time.Minute, checkProfileStatus: true,
		mediaMaxLoss: 0.2, mediaThreshold: 2, mediaRise: 2,
	}
}

// Media probe results: answered with all RTP back, with loss, with none
// back, and not answered at all.
func mediaOK() MediaResult { return MediaResult{Status: 200, Sent: 50, Received: 50, Echoed: 50} }
func mediaLoss(loss float64) MediaResult {
	return MediaResult{Status: 200, Sent: 50, Received: 30, Echoed: 30, Loss: loss}
}
func mediaNone() MediaResult { return MediaResult{Status: 200, Sent: 50, Loss: 1} }
func mediaUnanswered() MediaResult {
	return MediaResult{Status: 503, Err: errors.New("INVITE answered 503")}
}

func alive(at time.Time) ProbeResult { return ProbeResult{Class: ProbeAlive, Status: 200, At: at} }
func dead(at time.Time) ProbeResult  { return ProbeResult{Class: ProbeDead, At: at} }

func freshESL(at time.Time) ESLStatus {
	return ESLStatus{Connected: true, Ready: true, ProfileKnown: true, ProfilesRunning: true,
		Load: dispatcher.Load{Sessions: 10, MaxSessions: 100, IdleCPU: 80, At: at}}
}

func TestDecide(t *testing.T) {
	s := testSettings()
	tests := []struct {
		name       string
		setup      func(h *nodeHealth)
		now        time.Time
		want       dispatcher.State
		wantReason string
	}{
		{"nothing known: up", func(h *nodeHealth) {}, t0, dispatcher.StateUp, ReasonNone},
		{"one failed probe is not enough", func(h *nodeHealth) { h.observeProbe(dead(t0), s) }, t0, dispatcher.StateUp, ReasonNone},
		{"fall failed probes: down", func(h *nodeHealth) {
			h.observeProbe(dead(t0), s)
			h.observeProbe(dead(t0), s)
		}, t0, dispatcher.StateDown, ReasonProbe},
		{"refused once: down at once", func(h *nodeHealth) {
			h.observeProbe(ProbeResult{Class: ProbeDead, Refused: true, At: t0}, s)
		}, t0, dispatcher.StateDown, ReasonProbeRefused},
		{"down needs rise answers to come back", func(h *nodeHealth) {
			h.observeProbe(dead(t0), s)
			h.observeProbe(dead(t0), s)
			h.observeProbe(alive(t0), s)
		}, t0, dispatcher.StateDown, ReasonProbe},
		{"rise answers: up", func(h *nodeHealth) {
			h.observeProbe(dead(t0), s)
			h.observeProbe(dead(t0), s)
			h.observeProbe(alive(t0), s)
			h.observeProbe(alive(t0), s)
		}, t0, dispatcher.StateUp, ReasonNone},
		{"probe 503: full", func(h *nodeHealth) {
			h.observeProbe(ProbeResult{Class: ProbeFull, Status: 503, At: t0}, s)
		}, t0, dispatcher.StateFull, ReasonProbeBusy},
		{"operator drain wins over down", func(h *nodeHealth) {
			h.operator = OperatorDrain
			h.observeProbe(ProbeResult{Class: ProbeDead, Refused: true, At: t0}, s)
		}, t0, dispatcher.StateDraining, ReasonOperatorDrain},
		{"operator disable", func(h *nodeHealth) { h.operator = OperatorDisable }, t0, dispatcher.StateDisabled, ReasonOperatorOff},
		{"passive down", func(h *nodeHealth) { h.passiveDownAt = t0 }, t0, dispatcher.StateDown, ReasonPassive},
		{"passive down: probes before the cooldown do not clear it", func(h *nodeHealth) {
			h.passiveDownAt = t0
			h.observeProbe(alive(t0.Add(time.Second)), s)
			h.observeProbe(alive(t0.Add(2*time.Second)), s)
		}, t0.Add(3 * time.Second), dispatcher.StateDown, ReasonPassive},
		{"passive down: rise probes after the cooldown clear it", func(h *nodeHealth) {
			h.passiveDownAt = t0
			h.observeProbe(alive(t0.Add(11*time.Second)), s)
			h.observeProbe(alive(t0.Add(12*time.Second)), s)
		}, t0.Add(12 * time.Second), dispatcher.StateUp, ReasonNone},
		{"passive down while probes also failed: back with the probes, no cooldown", func(h *nodeHealth) {
			h.passiveDownAt = t0
			h.observeProbe(dead(t0.Add(time.Second)), s)
			h.observeProbe(dead(t0.Add(2*time.Second)), s)
			h.observeProbe(alive(t0.Add(3*time.Second)), s)
			h.observeProbe(alive(t0.Add(4*time.Second)), s)
		}, t0.Add(4 * time.Second), dispatcher.StateUp, ReasonNone},
		{"invite 503: full while held", func(h *nodeHealth) { h.fullUntil = t0.Add(5 * time.Second) }, t0, dispatcher.StateFull, ReasonInvite503},
		{"invite 503: up after the hold", func(h *nodeHealth) { h.fullUntil = t0.Add(5 * time.Second) }, t0.Add(6 * time.Second), dispatcher.StateUp, ReasonNone},
		{"invite 503 overruled by fresh ESL figures with room", func(h *nodeHealth) {
			h.esl = true
			h.observeESL(freshESL(t0), s, t0)
			h.fullUntil = t0.Add(5 * time.Second)
		}, t0, dispatcher.StateUp, ReasonNone},
		{"esl disconnected: down", func(h *nodeHealth) {
			h.esl = true
			h.observeESL(ESLStatus{Connected: false, Refused: true}, s, t0)
		}, t0, dispatcher.StateDown, ReasonESLDown},
		{"esl wrong password: judged by probes, up", func(h *nodeHealth) {
			h.esl = true
			h.observeESL(ESLStatus{Connected: false, AuthFailed: true}, s, t0)
		}, t0, dispatcher.StateUp, ReasonNone},
		{"esl not yet reported: undecided, up", func(h *nodeHealth) { h.esl = true }, t0, dispatcher.StateUp, ReasonNone},
		{"esl paused: full", func(h *nodeHealth) {
			h.esl = true
			st := freshESL(t0)
			st.Paused = true
			h.observeESL(st, s, t0)
		}, t0, dispatcher.StateFull, ReasonESLPaused},
		{"esl not ready: full", func(h *nodeHealth) {
			h.esl = true
			st := freshESL(t0)
			st.Ready = false
			h.observeESL(st, s, t0)
		}, t0, dispatcher.StateFull, ReasonESLNotReady},
		{"esl at max sessions: full", func(h *nodeHealth) {
			h.esl = true
			st := freshESL(t0)
			st.Load.Sessions = 100
			h.observeESL(st, s, t0)
		}, t0, dispatcher.StateFull, ReasonESLAtMax},
		{"stale esl figures are not trusted", func(h *nodeHealth) {
			h.esl = true
			st := freshESL(t0)
			st.Paused = true
			h.observeESL(st, s, t0)
		}, t0.Add(4 * time.Second), dispatcher.StateUp, ReasonNone},
		{"sip profile down: down", func(h *nodeHealth) {
			h.esl = true
			st := freshESL(t0)
			st.ProfilesRunning = false
			h.observeESL(st, s, t0)
		}, t0, dispatcher.StateDown, ReasonProfileDown},
		{"cpu low briefly: up", func(h *nodeHealth) {
			h.esl = true
			st := freshESL(t0)
			st.Load.IdleCPU = 2
			h.observeESL(st, s, t0)
		}, t0, dispatcher.StateUp, ReasonNone},
		{"cpu low for the window: full", func(h *nodeHealth) {
			h.esl = true
			for i := 0; i <= 60; i++ {
				at := t0.Add(time.Duration(i) * time.Second)
				st := freshESL(at)
				st.Load.IdleCPU = 2
				h.observeESL(st, s, at)
			}
		}, t0.Add(60 * time.Second), dispatcher.StateFull, ReasonCPU},
		{"cpu recovers: up", func(h *nodeHealth) {
			h.esl = true
			for i := 0; i <= 60; i++ {
				at := t0.Add(time.Duration(i) * time.Second)
				st := freshESL(at)
				st.Load.IdleCPU = 2
				h.observeESL(st, s, at)
			}
			h.observeESL(freshESL(t0.Add(61*time.Second)), s, t0.Add(61*time.Second))
		}, t0.Add(61 * time.Second), dispatcher.StateUp, ReasonNone},

		// Media probe.
		{"media: one probe without RTP is not enough", func(h *nodeHealth) {
			h.media.add(mediaNone(), s)
		}, t0, dispatcher.StateUp, ReasonNone},
		{"media: threshold probes without RTP: down", func(h *nodeHealth) {
			h.media.add(mediaNone(), s)
			h.media.add(mediaNone(), s)
		}, t0, dispatcher.StateDown, ReasonMedia},
		{"media: loss above max_loss, threshold times: down", func(h *nodeHealth) {
			h.media.add(mediaLoss(0.4), s)
			h.media.add(mediaLoss(0.21), s)
		}, t0, dispatcher.StateDown, ReasonMedia},
		{"media: loss at max_loss is good", func(h *nodeHealth) {
			h.media.add(mediaLoss(0.2), s)
			h.media.add(mediaLoss(0.2), s)
		}, t0, dispatcher.StateUp, ReasonNone},
		{"media: no RTP then loss count together", func(h *nodeHealth) {
			h.media.add(mediaNone(), s)
			h.media.add(mediaLoss(0.5), s)
		}, t0, dispatcher.StateDown, ReasonMedia},
		{"media: a good probe between bad ones resets the count", func(h *nodeHealth) {
			h.media.add(mediaNone(), s)
			h.media.add(mediaOK(), s)
			h.media.add(mediaNone(), s)
		}, t0, dispatcher.StateUp, ReasonNone},
		{"media: unanswered probes say nothing, however many", func(h *nodeHealth) {
			for range 5 {
				h.media.add(mediaUnanswered(), s)
			}
		}, t0, dispatcher.StateUp, ReasonNone},
		{"media: an unanswered probe does not reset the bad count", func(h *nodeHealth) {
			h.media.add(mediaNone(), s)
			h.media.add(mediaUnanswered(), s)
			h.media.add(mediaNone(), s)
		}, t0, dispatcher.StateDown, ReasonMedia},
		{"media: an answer without media sent says nothing", func(h *nodeHealth) {
			h.media.add(MediaResult{Status: 200, Err: errors.New("no SDP")}, s)
			h.media.add(MediaResult{Status: 200, Err: errors.New("no SDP")}, s)
		}, t0, dispatcher.StateUp, ReasonNone},
		{"media down: one good probe is not enough", func(h *nodeHealth) {
			h.media.add(mediaNone(), s)
			h.media.add(mediaNone(), s)
			h.media.add(mediaOK(), s)
		}, t0, dispatcher.StateDown, ReasonMedia},
		{"media down: rise good probes: up", func(h *nodeHealth) {
			h.media.add(mediaNone(), s)
			h.media.add(mediaNone(), s)
			h.media.add(mediaOK(), s)
			h.media.add(mediaUnanswered(), s)
			h.media.add(mediaOK(), s)
		}, t0, dispatcher.StateUp, ReasonNone},
		{"media down: a bad probe restarts the rise", func(h *nodeHealth) {
			h.media.add(mediaNone(), s)
			h.media.add(mediaNone(), s)
			h.media.add(mediaOK(), s)
			h.media.add(mediaLoss(0.9), s)
			h.media.add(mediaOK(), s)
		}, t0, dispatcher.StateDown, ReasonMedia},
		{"media down wins over full", func(h *nodeHealth) {
			h.esl = true
			st := freshESL(t0)
			st.Paused = true
			h.observeESL(st, s, t0)
			h.media.add(mediaNone(), s)
			h.media.add(mediaNone(), s)
		}, t0, dispatcher.StateDown, ReasonMedia},
		{"dead by probes is said before media", func(h *nodeHealth) {
			h.media.add(mediaNone(), s)
			h.media.add(mediaNone(), s)
			h.observeProbe(dead(t0), s)
			h.observeProbe(dead(t0), s)
		}, t0, dispatcher.StateDown, ReasonProbe},
		{"operator drain wins over media down", func(h *nodeHealth) {
			h.operator = OperatorDrain
			h.media.add(mediaNone(), s)
			h.media.add(mediaNone(), s)
		}, t0, dispatcher.StateDraining, ReasonOperatorDrain},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := &nodeHealth{}
			tc.setup(h)
			got, reason := decide(h, s, tc.now)
			require.Equal(t, tc.want, got)
			require.Equal(t, tc.wantReason, reason)
		})
	}
}

func TestMediaClass(t *testing.T) {
	tests := []struct {
		r    MediaResult
		want MediaClass
	}{
		{mediaOK(), MediaOK},
		{mediaLoss(0.2), MediaOK},
		{mediaLoss(0.2001), MediaLoss},
		{mediaNone(), MediaNone},
		{mediaUnanswered(), MediaError},
		{MediaResult{Status: 180}, MediaError},
		{MediaResult{Status: 200}, MediaError},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, tc.r.Class(0.2), "%+v", tc.r)
	}
	assert.Equal(t, []string{"ok", "loss", "no_rtp", "error"}, []string{
		MediaOK.String(), MediaLoss.String(), MediaNone.String(), MediaError.String()})
}

func TestMediaCounts(t *testing.T) {
	s := testSettings()
	var m mediaTrack
	for _, r := range []MediaResult{mediaOK(), mediaOK(), mediaNone(), mediaLoss(0.5), mediaUnanswered()} {
		m.add(r, s)
	}
	assert.Equal(t, [4]uint64{MediaError: 1, MediaOK: 2, MediaLoss: 1, MediaNone: 1}, m.counts)
	assert.Equal(t, MediaError, m.lastClass)
	assert.True(t, m.down)
}

func TestMediaURI(t *testing.T) {
	assert.Equal(t, "sip:echo@10.0.0.11:5060", mediaURI("sip:echo@{node}", "", "10.0.0.11", 5060))
	assert.Equal(t, "sip:9196@[2001:db8::1]:5080", mediaURI("sip:echo@{node}", "sip:9196@{node}", "2001:db8::1", 5080))
	assert.Equal(t, "sip:echo@media.example", mediaURI("sip:echo@{node}", "sip:echo@media.example", "fs1", 5060))
}

func TestESLDownOnDisconnectOff(t *testing.T) {
	s := testSettings()
	s.eslDownOnFail = false
	h := &nodeHealth{esl: true}
	h.observeESL(ESLStatus{Connected: false}, s, t0)
	got, _ := decide(h, s, t0)
	require.Equal(t, dispatcher.StateUp, got)
}

func TestAliveCodes(t *testing.T) {
	f := AliveCodes([]string{"2xx", "404", "405"})
	for code, want := range map[int]bool{200: true, 202: true, 299: true, 404: true, 405: true, 403: false, 500: false, 603: false} {
		require.Equal(t, want, f(code), code)
	}
}
