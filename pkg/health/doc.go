// Package health decides which nodes take new calls, and publishes the
// decision as the node's state in the dispatcher, which Pick reads at once
// without locks.
//
// Per node, a monitor goroutine owns everything known about the node and
// merges its inputs in one place (decide, a pure function with a table
// test):
//
//   - OPTIONS probes (options.go), one in flight at a time, every interval,
//     from the node's own socket: fall consecutive failures take the node
//     down, rise consecutive answers bring it back; a probe refused by the
//     node's host (ICMP port unreachable, TCP reset) takes it down at once —
//     nothing listens there any more; a 503 answer means full, not down.
//   - The FreeSWITCH Event Socket (esl.go), when configured: a refused or
//     dropped connection takes the node down at once (a crashed process);
//     a connection that stops answering polls is dropped (a hung process);
//     `fsctl pause_check`, `status` ("is not ready") and Session-Count at
//     Max-Sessions make it full; a SIP profile not RUNNING takes it down;
//     Idle-CPU under a threshold for a sustained time makes it full. Load
//     figures (sessions, capacity, idle CPU) go to the dispatcher for the
//     least-load policy and are dropped when older than a bound: never
//     trusted forever.
//   - Passive signals from the proxy: consecutive INVITEs the node left
//     unanswered or failed take it down; it comes back only through probe
//     successes, after a cooldown. An INVITE answered 503 makes it full
//     for a while (FreeSWITCH answers OPTIONS 200 even when paused or full
//     since 1.11.1, so traffic and the Event Socket must tell).
//   - The media probe (media.go), when enabled: every interval a short call
//     straight to the node (never through the proxy, and marked with the
//     X-Sipbalancer-Probe header), to an echo target such as
//     sip:echo@node; RTP for a second, the echo measured (loss, jitter,
//     round trip), BYE. threshold probes in a row with loss above max_loss
//     or no RTP back at all take the node down with reason media (its SIP
//     may be perfect: callers would hear silence); rise good ones bring it
//     back. A probe call that is not answered says nothing about media and
//     counts neither way.
//   - The operator: drain or disable, which win over everything.
//
// Order of precedence in decide: operator (disabled, draining), then down
// (Event Socket gone, probes failing, passive failures, profile down,
// media), then full (paused, not ready, at max sessions, CPU saturated,
// probe 503, INVITE 503), else up. Each change is logged once and reported to
// observers (metrics, the admin API).
package health
