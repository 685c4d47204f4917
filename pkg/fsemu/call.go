package fsemu

import (
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
)

// phase is where a call stands. Transitions happen under call.mu.
type phase uint8

const (
	phaseNew       phase = iota // record opened by observe; no handler has claimed it
	phaseSetup                  // the INVITE handler owns it, not admitted yet
	phaseDropped                // DropRatio: the INVITE and its retransmissions are ignored
	phaseRinging                // admitted, 100 (and maybe 180) sent: an early dialog
	phaseAnswering              // 200 OK being handed to the transaction
	phaseAnswered               // 200 OK sent, waiting for the ACK
	phaseConfirmed              // ACK received
	phaseEnded                  // final non-2xx, BYE, CANCEL or failure
)

// inDialog reports whether requests inside the (early) dialog are served.
func (p phase) inDialog() bool {
	return p == phaseRinging || p == phaseAnswering || p == phaseAnswered || p == phaseConfirmed
}

// call is one Call-ID. rec is the public record; the rest is the dialog
// state the node needs as a UAS. Every field is guarded by mu.
type call struct {
	n  *Node
	id string

	mu       sync.Mutex
	rec      CallRecord
	phase    phase
	admitted bool     // holds an admission slot
	ch       *channel // the Event Socket's view while admitted (nil without ESL)
	ended    chan struct{}

	// Initial INVITE, for telling retransmissions from merged requests.
	inviteBranch string
	inviteCSeq   uint32

	// Dialog state (RFC 3261 12.1.1), set when the call is admitted.
	local        sip.ToHeader   // the node's side: the INVITE's To plus our tag
	remote       sip.FromHeader // the caller's side: the INVITE's From
	remoteTarget sip.Uri        // the caller's Contact
	routeSet     []sip.Uri      // the INVITE's Record-Route, top first
	transport    string         // transport the INVITE came over
	localCSeq    uint32
	remoteCSeq   uint32

	// Media description: one RTP port per call, the o= line's session id
	// and version (bumped on every offer/answer).
	rtpPort    int
	sdpSession uint64
	sdpVersion uint64
	// media is the call's RTP socket (nil: none, rtpPort is only written
	// in the SDP); echo marks a call to the echo extension.
	media *media
	echo  bool
	offer []byte // the INVITE's SDP, for the media

	// pending is the 2xx waiting for its ACK (initial INVITE or re-INVITE).
	pending *pendingAnswer
	hold    *time.Timer
}

// pendingAnswer retransmits a 2xx until its ACK arrives (RFC 3261 13.3.1.4):
// over UDP at T1, 2*T1, 4*T1, ... capped at T2; on any transport it gives
// up after 64*T1.
type pendingAnswer struct {
	res      *sip.Response
	cseq     uint32
	initial  bool
	conn     sip.Connection // nil on reliable transports: nothing to resend
	interval time.Duration
	deadline time.Time
	timer    *time.Timer
	acked    chan struct{} // closed when the ACK arrives or the call ends
}

func (n *Node) newCall(callID string, req *sip.Request) *call {
	return &call{
		n:     n,
		id:    callID,
		ended: make(chan struct{}),
		rec: CallRecord{
			CallID:    callID,
			Source:    req.Source(),
			Transport: req.Transport(),
		},
	}
}

// clearPendingLocked stops the 2xx retransmission, if any.
func (c *call) clearPendingLocked() {
	if p := c.pending; p != nil {
		if p.timer != nil {
			p.timer.Stop()
		}
		close(p.acked)
		c.pending = nil
	}
}

// stopTimersLocked stops every timer the call owns.
func (c *call) stopTimersLocked() {
	c.clearPendingLocked()
	if c.hold != nil {
		c.hold.Stop()
		c.hold = nil
	}
}

// endLocked ends the call for reason: timers stop, the admission slot is
// given back, and whoever waits on c.ended (a ringing INVITE) wakes up.
// Ending twice is a no-op.
func (c *call) endLocked(reason string) {
	if c.phase == phaseEnded {
		return
	}
	c.phase = phaseEnded
	c.rec.EndReason = reason
	c.stopTimersLocked()
	c.media.close()
	// Only the record and the tags (for a crossing BYE) are needed now;
	// keep ended calls small, there may be MaxRecords of them.
	c.local, c.remote = sip.ToHeader{}, sip.FromHeader{}
	c.remoteTarget, c.routeSet = sip.Uri{}, nil
	if c.admitted {
		c.admitted = false
		c.n.adm.release()
		c.n.channelHangupLocked(c, reason)
	}
	close(c.ended)
}

// armLocked starts retransmitting p (already c.pending) now that the
// transaction has sent it once.
func (c *call) armLocked(p *pendingAnswer) {
	t1 := c.n.cfg.T1
	p.deadline = time.Now().Add(64 * t1)
	p.interval = t1
	first := t1
	if p.conn == nil {
		first = 64 * t1
	}
	p.timer = time.AfterFunc(first, func() { c.onRetransmitTimer(p) })
}

// onRetransmitTimer resends the pending 2xx, or gives up on it at the
// deadline: an initial INVITE never ACKed is hung up with a BYE, as
// FreeSWITCH does.
func (c *call) onRetransmitTimer(p *pendingAnswer) {
	n := c.n
	if !n.enter() {
		return
	}
	defer n.leave()

	c.mu.Lock()
	if c.pending != p {
		c.mu.Unlock()
		return
	}
	now := time.Now()
	if !now.Before(p.deadline) {
		c.clearPendingLocked()
		if !p.initial || c.phase != phaseAnswered {
			c.mu.Unlock()
			return
		}
		bye := c.byeLocked()
		c.rec.Ended = true
		c.endLocked(EndAckTimeout)
		c.mu.Unlock()
		n.counters.ackTimeouts.Add(1)
		n.log.Info("no ACK for 200 OK, hanging up", "call_id", c.id)
		n.sendBye(c.id, bye)
		return
	}
	if p.conn != nil {
		if err := p.conn.WriteMsg(p.res); err != nil {
			n.log.Debug("2xx retransmission failed", "call_id", c.id, "error", err)
		}
		p.interval = min(2*p.interval, n.cfg.T2)
	}
	next := p.deadline.Sub(now)
	if p.conn != nil {
		next = min(p.interval, next)
	}
	p.timer.Reset(next)
	c.mu.Unlock()
}

// confirmLocked moves an answered call to confirmed and arms HoldTime.
func (c *call) confirmLocked() {
	c.phase = phaseConfirmed
	if d := loadDuration(&c.n.adm.holdTime); d > 0 {
		c.hold = time.AfterFunc(d, c.onHoldTimer)
	}
}

// onHoldTimer hangs up a confirmed call after HoldTime.
func (c *call) onHoldTimer() {
	n := c.n
	if !n.enter() {
		return
	}
	defer n.leave()

	c.mu.Lock()
	if c.phase != phaseConfirmed {
		c.mu.Unlock()
		return
	}
	c.hold = nil
	bye := c.byeLocked()
	c.rec.Ended = true
	c.endLocked(EndHold)
	c.mu.Unlock()
	n.log.Debug("hold time over, hanging up", "call_id", c.id)
	n.sendBye(c.id, bye)
}

// evict stops a call whose record was pushed out of the registry.
func (n *Node) evict(c *call) {
	c.mu.Lock()
	c.endLocked(EndEvicted)
	c.mu.Unlock()
}

// matchLocked reports whether an in-dialog request from the caller belongs
// to this call's dialog: Call-ID (already matched), the caller's tag in
// From and the node's tag in To.
func (c *call) matchLocked(req *sip.Request) bool {
	if c.rec.ToTag == "" || c.phase < phaseRinging {
		return false
	}
	from, to := req.From(), req.To()
	if from == nil || to == nil {
		return false
	}
	ft, _ := from.Params.Get("tag")
	tt, _ := to.Params.Get("tag")
	return ft == c.rec.FromTag && tt == c.rec.ToTag
}
