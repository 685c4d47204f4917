package fsemu

import "sync/atomic"

// Stats are a node's counters since Start. Counters count events, not
// packets: retransmissions absorbed by a transaction are not counted.
type Stats struct {
	// Invites counts new calls: initial INVITEs, once per Call-ID.
	Invites int64 `json:"invites"`
	// Answered counts calls whose initial INVITE got 200 OK.
	Answered int64 `json:"answered"`
	// Rejected503 counts INVITEs answered 503 Maximum Calls In Progress
	// (paused, at MaxSessions, or Fail503Ratio).
	Rejected503 int64 `json:"rejected_503"`
	// Dropped counts INVITEs ignored by DropRatio.
	Dropped int64 `json:"dropped"`
	// Cancelled counts calls ended by CANCEL before the answer.
	Cancelled int64 `json:"cancelled"`
	// ByesReceived counts BYEs matched to a call.
	ByesReceived int64 `json:"byes_received"`
	// ByesSent counts BYEs the node sent (HoldTime or ACK timeout).
	ByesSent int64 `json:"byes_sent"`
	// ReInvites counts in-dialog INVITEs answered 200.
	ReInvites int64 `json:"reinvites"`
	// Updates counts in-dialog UPDATEs answered 200.
	Updates int64 `json:"updates"`
	// Options counts OPTIONS, in and out of dialog.
	Options int64 `json:"options"`
	// Infos counts in-dialog INFOs answered 200.
	Infos int64 `json:"infos"`
	// Acks counts ACKs received in a dialog the node answered (an ACK
	// retransmitted by the caller counts again).
	Acks int64 `json:"acks"`
	// AckTimeouts counts answered calls given up for want of an ACK after
	// 64*T1 (each also sent a BYE).
	AckTimeouts int64 `json:"ack_timeouts"`
	// NoDialog counts requests answered 481 Call/Transaction Does Not Exist.
	NoDialog int64 `json:"no_dialog"`
	// MediaCalls counts calls that got an RTP socket (echo calls, and every
	// answered call with Config.RTP).
	MediaCalls int64 `json:"media_calls"`
	// MediaErrors counts calls that should have had media and got no
	// socket.
	MediaErrors int64 `json:"media_errors"`
	// RTPReceived counts RTP packets received, RTPSent RTP packets sent
	// (echoed packets and tone).
	RTPReceived int64 `json:"rtp_received"`
	RTPSent     int64 `json:"rtp_sent"`
	// Active is the calls in progress now (ringing plus established).
	Active int `json:"active"`
}

// counters backs Stats with lock-free counters.
type counters struct {
	invites, answered, rejected503, dropped, cancelled atomic.Int64
	byesReceived, byesSent, reInvites, updates         atomic.Int64
	options, infos, acks, ackTimeouts, noDialog        atomic.Int64
	mediaCalls, mediaErrors, rtpReceived, rtpSent      atomic.Int64
}

// Stats returns a snapshot of the node's counters.
func (n *Node) Stats() Stats {
	c := &n.counters
	return Stats{
		Invites:      c.invites.Load(),
		Answered:     c.answered.Load(),
		Rejected503:  c.rejected503.Load(),
		Dropped:      c.dropped.Load(),
		Cancelled:    c.cancelled.Load(),
		ByesReceived: c.byesReceived.Load(),
		ByesSent:     c.byesSent.Load(),
		ReInvites:    c.reInvites.Load(),
		Updates:      c.updates.Load(),
		Options:      c.options.Load(),
		Infos:        c.infos.Load(),
		Acks:         c.acks.Load(),
		AckTimeouts:  c.ackTimeouts.Load(),
		NoDialog:     c.noDialog.Load(),
		MediaCalls:   c.mediaCalls.Load(),
		MediaErrors:  c.mediaErrors.Load(),
		RTPReceived:  c.rtpReceived.Load(),
		RTPSent:      c.rtpSent.Load(),
		Active:       n.Active(),
	}
}

// Why a call ended, as found in CallRecord.EndReason.
const (
	EndRejected   = "rejected"    // final non-2xx to the INVITE (503)
	EndCancel     = "cancel"      // CANCEL before the answer
	EndCallerBye  = "caller-bye"  // BYE from the caller
	EndHold       = "hold"        // node BYE after HoldTime
	EndAckTimeout = "ack-timeout" // node BYE after 64*T1 without ACK
	EndError      = "error"       // a response could not be sent
	EndEvicted    = "evicted"     // record pushed out by MaxRecords
)

// CallRecord is what a node remembers about one Call-ID.
type CallRecord struct {
	CallID string `json:"call_id"`
	// Methods lists every request received for this Call-ID in arrival
	// order, retransmissions included ("INVITE", "ACK", "INVITE" for a
	// re-INVITE, "BYE", ...), at most 256 of them.
	Methods []string `json:"methods"`
	// Status is the final status sent to the initial INVITE (0: none).
	Status    int  `json:"status"`
	Answered  bool `json:"answered"`
	Cancelled bool `json:"cancelled"`
	Ended     bool `json:"ended"`
	// FromTag is the caller's tag, ToTag the node's.
	FromTag string `json:"from_tag"`
	ToTag   string `json:"to_tag"`
	// Source is the source address of the initial INVITE.
	Source string `json:"source"`
	// Transport is the transport of the initial INVITE ("UDP" or "TCP").
	Transport string `json:"transport"`
	// EndReason says why the call ended (one of the End* constants), or is
	// empty while it is in progress.
	EndReason string `json:"end_reason,omitempty"`
	// Echo marks a call to the echo extension (Config.EchoUser).
	Echo bool `json:"echo,omitempty"`
	// RTPPort is the call's RTP socket port (0: the call had no media).
	RTPPort int `json:"rtp_port,omitempty"`
	// RTPReceived and RTPSent count the call's RTP packets.
	RTPReceived int64 `json:"rtp_received,omitempty"`
	RTPSent     int64 `json:"rtp_sent,omitempty"`
}

// maxMethods bounds CallRecord.Methods so one noisy dialog cannot grow
// without limit.
const maxMethods = 256

func (r CallRecord) clone() CallRecord {
	r.Methods = append([]string(nil), r.Methods...)
	return r
}

// recordLocked is a copy of the call's record with its media figures.
func (c *call) recordLocked() CallRecord {
	r := c.rec.clone()
	r.Echo = c.echo
	if m := c.media; m != nil {
		r.RTPPort = m.port
		r.RTPReceived, r.RTPSent = m.received.Load(), m.sent.Load()
	}
	return r
}
