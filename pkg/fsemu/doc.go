// Package fsemu emulates a FreeSWITCH node as a SIP proxy in front of it
// sees one: a mod_sofia profile answering calls over UDP and TCP on one
// port. sipbalancer's tests, demo and benchmarks run it in place of real
// FreeSWITCH; nothing in it depends on the balancer.
//
// # What a node does
//
// An initial INVITE gets 100 Trying at once, 180 Ringing (with the node's
// To tag and Contact) after RingDelay, and 200 OK with an SDP answer after
// AnswerDelay more. Responses to the INVITE copy its Record-Route. The 200
// is retransmitted over UDP at T1, 2*T1, ... capped at T2 until the ACK
// arrives (RFC 3261 13.3.1.4; sipgo's transaction does not do it); with no
// ACK after 64*T1 the node sends BYE, as FreeSWITCH does. With HoldTime set
// the node hangs up itself that long after the ACK.
//
// Node-originated BYEs follow RFC 3261 12.2.1.1 for a UAS: Request-URI =
// the caller's Contact, Route = the INVITE's Record-Route top first, sent to
// the first Route when it is a loose router, CSeq from the node's own
// sequence, From/To swapped relative to the INVITE. They leave from the
// node's listening UDP socket so they pass through the proxy that
// record-routed the call.
//
// In-dialog requests are matched by Call-ID and both tags: re-INVITE gets
// 200 with SDP (and its own 2xx retransmission), UPDATE, INFO, OPTIONS,
// PRACK, NOTIFY and MESSAGE 200, REFER 202, BYE 200; anything that matches
// no live dialog gets 481 Call/Transaction Does Not Exist.
//
// CANCEL is answered by sipgo (200 to the CANCEL, 487 to the INVITE); the
// node marks the call cancelled, stops its timers, and makes sure no 200 or
// 180 follows the 487 (see respondInvite).
//
// # Admission, as mod_sofia's gate
//
// When the node is paused (Pause, like `fsctl pause`) or at MaxSessions, a
// new INVITE gets 503 Maximum Calls In Progress with Retry-After: 300 and no
// 100 Trying. OPTIONS get the same 503 unless OptionsAlways200, which is
// the FreeSWITCH >= 1.11.1 default (OPTIONS stay 200 while paused or full).
// Fault injection answers a fraction of INVITEs 503 (Fail503Ratio) or
// ignores them completely, retransmissions included (DropRatio). This
// state lives in one place (admission) so an Event Socket front end can
// share it with SIP.
//
// # Event Socket
//
// With Config.ESLAddr the node also serves FreeSWITCH's Event Socket in
// inbound mode, byte for byte as mod_event_socket 1.11 writes it
// (shared/esl.md, shared/esl-real-transcripts.md): the auth/request
// greeting, `auth` (Config.ESLPassword; a wrong one gets -ERR invalid and
// the goodbye notice), a goodbye after ESLAuthTimeout without commands
// before auth, `event [plain|json|xml] NAMES` (the format applies to the
// whole connection), `nixevent`, `noevents`, `filter`, `api`, `bgapi`
// (BACKGROUND_JOB) and `exit`. Commands end with an empty line, LF or CRLF,
// and may be pipelined; events are written only between replies.
//
// `api` knows status, show calls|channels count, show calls|channels as
// json, fsctl pause|resume [inbound|outbound], fsctl pause_check,
// ready_check, shutdown_check, max_sessions [N], fsctl shutdown [elegant|
// asap|cancel|now], sofia status, version, uptime and hostname; anything
// else is "-ERR <cmd> Command not found!". fsctl pause and max_sessions
// change the same admission state as Pause and SetMaxSessions, so SIP
// answers accordingly. fsctl shutdown (and Close) sends subscribers the
// SHUTDOWN event, every client "The system is being shut down.", closes
// the listener so new connections are refused, and stops the node.
//
// Events: HEARTBEAT every HeartbeatInterval (the first at Start, before
// anyone can subscribe) with FreeSWITCH's 27 headers and live figures;
// CHANNEL_CREATE when an INVITE is admitted and CHANNEL_HANGUP_COMPLETE
// when that call ends (NORMAL_CLEARING for a BYE either way,
// ORIGINATOR_CANCEL for a CANCEL, RECOVERY_ON_TIMER_EXPIRE for a missing
// ACK); SHUTDOWN_REQUESTED, BACKGROUND_JOB and SHUTDOWN. A call is one
// channel: Session-Count, `show calls count` and `show channels count` are
// all Active. Max-Sessions is MaxSessions, or 1000 (FreeSWITCH's default)
// when unlimited. Session-Per-Sec is what is left of SessionsPerSecond in
// the current second; Idle-CPU is Config.IdleCPU or SetIdleCPU. Each
// connection queues at most 100000 events; past 500 lost in a row it is
// killed with "killed listener because of lost events", as in FreeSWITCH.
//
// # Media
//
// A call whose Request-URI user is EchoUser ("echo") is the echo extension:
// it gets an RTP socket of its own, bound on the node's SIP address when
// the call is answered (its port is in the SDP answer) and closed when the
// call ends or the node closes, and every RTP packet it receives is sent
// back to the caller's SDP address (or, without one, to where the packet
// came from), payload unchanged, under the node's own SSRC, sequence
// numbers and timestamps, as FreeSWITCH's echo application does.
// SetEchoEnabled(false) (EchoDisabled, `-echo=false`, `POST /echo`) keeps
// answering those calls and reading their RTP but sends nothing back: dead
// media behind healthy signalling, the fault a media probe exists for.
//
// With Config.RTP every answered call gets media: its own socket, and a
// 400 Hz tone (PCMU, or PCMA when the offer prefers it) sent to the
// caller's SDP address every 20 ms from the answer until the call ends,
// as FreeSWITCH playing a prompt would. It is off by default: other calls
// get an SDP answer naming a port nothing listens on, and no socket, so
// benchmarks and tests with tens of thousands of calls pay for no media.
// A re-INVITE or UPDATE with a new offer moves where the media goes. Stats
// count media calls and RTP packets; CallRecord has each call's.
//
// # Records
//
// Stats counts events; Calls and Call return per-Call-ID records whose
// Methods list every request received for the Call-ID in arrival order,
// retransmissions included (they are taken from sipgo's transport layer,
// before transactions absorb them). At most MaxRecords records are kept.
//
// # Known differences from FreeSWITCH
//
// The 487 that sipgo sends on CANCEL carries a To tag of its own, not the
// one of the 180. Media is an echo or a tone (see Media), with no RTCP
// although the SDP answer names an RTCP port, and no codec negotiation
// beyond taking the first G.711 format of the offer for the tone; the
// answer always lists PCMU, PCMA and telephone-event. Only INVITE-related
// session limits are modelled: sessions-per-second and min-idle-cpu are
// reported over the Event Socket but never refuse a call, and there is no
// standby "System Paused". SetProfileRunning(false) keeps the port open (a real stopped
// profile closes it) and answers 503 as mod_sofia does for a profile that
// is not RUNNING. Channel events carry a plausible subset of a real
// channel's headers, and Event-Calling-Line-Number of CHANNEL_* events is
// not taken from a capture. No `log` lines are ever sent.
//
// Large messages: sipgo refuses UDP messages above sip.UDPMTUSize-200 bytes
// (1300 by default). A program that expects long Record-Route or Via sets
// may raise sip.UDPMTUSize before starting nodes; cmd/fsemu does.
package fsemu
