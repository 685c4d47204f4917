package fsemu

import (
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// admission is the node's call-acceptance state: paused, the profile state,
// the session cap, the calls in progress, fault injection and the timing
// knobs. It is the one place every front end reads and changes (the SIP
// profile and the Event Socket server), so `fsctl pause` over ESL and an
// INVITE over SIP see the same answer. All fields are safe for concurrent
// use.
type admission struct {
	// pausedIn and pausedOut are FreeSWITCH's SCF_NO_NEW_INBOUND_SESSIONS
	// and SCF_NO_NEW_OUTBOUND_SESSIONS: `fsctl pause` sets both, `fsctl
	// pause inbound|outbound` one. Only pausedIn gates SIP (the node places
	// no outbound calls); both together make the core "not ready".
	pausedIn  atomic.Bool
	pausedOut atomic.Bool
	// profileDown is a SIP profile that is not RUNNING (`sofia status`).
	profileDown      atomic.Bool
	optionsAlways200 atomic.Bool
	maxSessions      atomic.Int64
	active           atomic.Int64
	fail503          atomic.Uint64 // math.Float64bits
	drop             atomic.Uint64 // math.Float64bits
	ringDelay        atomic.Int64  // time.Duration
	answerDelay      atomic.Int64  // time.Duration
	holdTime         atomic.Int64  // time.Duration

	rngMu sync.Mutex
	rng   *rand.Rand
}

func newAdmission(cfg Config) *admission {
	a := &admission{}
	seed := uint64(cfg.Seed)
	if cfg.Seed == 0 {
		seed = rand.Uint64()
	}
	a.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	a.optionsAlways200.Store(cfg.OptionsAlways200)
	a.maxSessions.Store(int64(cfg.MaxSessions))
	a.setFaults(cfg.Fail503Ratio, cfg.DropRatio)
	a.ringDelay.Store(int64(cfg.RingDelay))
	a.answerDelay.Store(int64(cfg.AnswerDelay))
	a.holdTime.Store(int64(cfg.HoldTime))
	return a
}

// full reports whether the session cap is reached.
func (a *admission) full() bool {
	limit := a.maxSessions.Load()
	return limit > 0 && a.active.Load() >= limit
}

// busy is FreeSWITCH's gate for new out-of-dialog requests (sofia.c,
// condition 1): paused for inbound calls (fsctl pause), the profile not
// RUNNING, or Session-Count >= Max-Sessions.
func (a *admission) busy() bool { return a.closedToNew() || a.full() }

// closedToNew reports whether new calls are refused whatever the count.
func (a *admission) closedToNew() bool { return a.pausedIn.Load() || a.profileDown.Load() }

// admit takes a session slot for a new call unless the gate is closed.
func (a *admission) admit() bool { return !a.closedToNew() && a.tryAdmit() }

// tryAdmit takes a session slot unless the cap is reached.
func (a *admission) tryAdmit() bool {
	for {
		cur := a.active.Load()
		if limit := a.maxSessions.Load(); limit > 0 && cur >= limit {
			return false
		}
		if a.active.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// release gives back a slot taken by tryAdmit.
func (a *admission) release() { a.active.Add(-1) }

func (a *admission) setFaults(fail503, drop float64) {
	a.fail503.Store(math.Float64bits(clampRatio(fail503)))
	a.drop.Store(math.Float64bits(clampRatio(drop)))
}

func (a *admission) faults() (fail503, drop float64) {
	return math.Float64frombits(a.fail503.Load()), math.Float64frombits(a.drop.Load())
}

// roll returns true with probability p.
func (a *admission) roll(p float64) bool {
	switch {
	case p <= 0:
		return false
	case p >= 1:
		return true
	}
	a.rngMu.Lock()
	v := a.rng.Float64()
	a.rngMu.Unlock()
	return v < p
}

func clampRatio(r float64) float64 {
	if math.IsNaN(r) || r < 0 {
		return 0
	}
	return min(r, 1)
}

func loadDuration(v *atomic.Int64) time.Duration { return time.Duration(v.Load()) }

// Pause makes the node refuse new calls like `fsctl pause`: new INVITEs get
// 503 Maximum Calls In Progress, and OPTIONS too unless OptionsAlways200.
// Calls in progress carry on. It is the state `fsctl pause` sets over the
// Event Socket.
func (n *Node) Pause() {
	n.adm.pausedIn.Store(true)
	n.adm.pausedOut.Store(true)
}

// Resume undoes Pause (and `fsctl pause inbound|outbound`), like `fsctl
// resume`.
func (n *Node) Resume() {
	n.adm.pausedIn.Store(false)
	n.adm.pausedOut.Store(false)
}

// Paused reports whether new inbound calls are refused: Pause, or `fsctl
// pause` or `fsctl pause inbound` over the Event Socket.
func (n *Node) Paused() bool { return n.adm.pausedIn.Load() }

// SetProfileRunning starts (true) or stops (false) the node's SIP profile
// as `sofia status` shows it, RUNNING or DOWN. While it is down new INVITEs
// get 503 Maximum Calls In Progress, and OPTIONS too unless
// OptionsAlways200, as mod_sofia answers for a profile that is not running.
func (n *Node) SetProfileRunning(running bool) { n.adm.profileDown.Store(!running) }

// ProfileRunning reports whether the SIP profile is RUNNING.
func (n *Node) ProfileRunning() bool { return !n.adm.profileDown.Load() }

// SetMaxSessions changes the session cap like `fsctl max_sessions`; 0 means
// unlimited. Calls already in progress are kept.
func (n *Node) SetMaxSessions(limit int) { n.adm.maxSessions.Store(int64(max(limit, 0))) }

// MaxSessions returns the session cap (0: unlimited).
func (n *Node) MaxSessions() int { return int(n.adm.maxSessions.Load()) }

// SetFaults changes the fault-injection ratios (each clamped to [0, 1]).
func (n *Node) SetFaults(fail503, drop float64) { n.adm.setFaults(fail503, drop) }

// Faults returns the fault-injection ratios.
func (n *Node) Faults() (fail503, drop float64) { return n.adm.faults() }

// SetAnswerDelay changes the delay between 180 Ringing and 200 OK for calls
// that have not reached that point yet.
func (n *Node) SetAnswerDelay(d time.Duration) { n.adm.answerDelay.Store(int64(max(d, 0))) }

// AnswerDelay returns the delay between 180 Ringing and 200 OK.
func (n *Node) AnswerDelay() time.Duration { return loadDuration(&n.adm.answerDelay) }

// SetRingDelay changes the delay between an INVITE and its 180 Ringing.
func (n *Node) SetRingDelay(d time.Duration) { n.adm.ringDelay.Store(int64(max(d, 0))) }

// SetHoldTime changes how long after the ACK the node hangs up new calls
// (0: never).
func (n *Node) SetHoldTime(d time.Duration) { n.adm.holdTime.Store(int64(max(d, 0))) }

// SetOptionsAlways200 switches between the FreeSWITCH >= 1.11.1 OPTIONS
// behaviour (true: 200 while paused or full) and the 1.11.0 one (false: 503).
func (n *Node) SetOptionsAlways200(v bool) { n.adm.optionsAlways200.Store(v) }

// Active returns the calls in progress: ringing plus established.
func (n *Node) Active() int { return int(n.adm.active.Load()) }
