// Package guard is the balancer's admission control: which sources may send
// (a trunk ACL), how much (token buckets per source and a global new-call
// cap), and what a message and a connection may look like (size, header
// count and length, Via count, TCP connection counts, idle and slow-loris
// timeouts). It is plain Go over bytes, addresses and a few parsed fields:
// no sipgo types, no I/O of its own except the listener wrapper.
//
// # Pieces
//
//   - ACL (acl.go): trunks are named sets of CIDRs with optional Request-URI
//     host and header conditions; node addresses are always allowed; no
//     trunks means every source is allowed. Built once per configuration,
//     swapped atomically; a lookup is a binary search over disjoint address
//     ranges and never allocates.
//   - Limiter (limiter.go): GCRA token buckets per source (IPv6 by /64) for
//     new calls and for all requests, in a fixed-size set-associative table
//     (memory flat under floods from any number of spoofed addresses), plus
//     a lock-free global new-call bucket.
//   - Message limits (message.go): InspectDatagram checks a UDP datagram and
//     peeks at what the read filter needs (request or response, INVITE, To
//     tag) in one pass; the stream scanner frames TCP/TLS streams exactly as
//     sipgo does and applies the same limits per message.
//   - Listener (listener.go): a net.Listener wrapper for TCP and TLS
//     enforcing connection counts (total and per source), an idle timeout,
//     a read timeout per message (slow-loris), the message limits, and,
//     optionally, the ACL at accept.
//   - Guard (guard.go) composes them for the three points of the request
//     path below; Counters/Stats count refusals by Reason.
//
// # Where each check runs
//
// sipgo gives three places to act, and the guard uses each for what it can
// see there:
//
//  1. The UDP read filter (Guard.ReadFilter), before sipgo parses a
//     datagram: message limits; the source ACL (the address alone); and,
//     when limits.action is drop, the rate limits. A datagram dropped here
//     creates no transaction, gets no automatic 100 Trying, costs no parse
//     and writes no sipgo "failed to parse" log line. Responses from outside
//     the trunks are dropped here too (they would only reach the stray
//     response handler): destinations that nodes call through the balancer
//     must therefore be trunks as well.
//  2. The TCP/TLS listener (Guard.Listener), at accept and on every read:
//     connection counts, the ACL at accept when untrusted is drop, the
//     message limits per framed message, idle and read timeouts. For TCP
//     the read filter sees arbitrary reads, not messages, so it does nothing
//     there; the listener's conn wrapper keeps the per-connection framing
//     state instead.
//  3. The request handler (Guard.Admit), after sipgo parsed the request and
//     made its server transaction: the Request-URI and header conditions of
//     conditional trunks (they need a parsed request), the ACL with reject
//     (403), and the rate limits not already applied by the filter (all of
//     them with reply_503, TCP/TLS always). A refusal without a code is a
//     silent drop: return from the handler without responding. sipgo then
//     terminates the transaction, which stops its Timer_1xx: no automatic
//     100 Trying goes out as long as the handler returns within 200 ms
//     (checked against sipgo v1.7.3). A retransmission creates a new
//     transaction and is refused again.
//
// What is left to sipgo: the stream parser's own 64 KiB bound, its refusal
// of what it cannot parse (UDP: dropped silently; TCP: connection closed),
// and anything in WebSocket transports, which the balancer does not serve.
//
// # Wiring (pkg/sip and internal/app)
//
// Build the guard from the configuration (internal/app):
//
//	trunks := make([]guard.Trunk, len(cfg.Trunks))
//	for i, t := range cfg.Trunks {
//		cidrs, _ := t.Prefixes() // validated by config
//		trunks[i] = guard.Trunk{Name: t.Name, CIDRs: cidrs, RequestURIHost: t.RequestURIHost,
//			Header: t.Header.Name, HeaderValue: t.Header.Value, ExemptFromRateLimits: t.ExemptFromRateLimits}
//	}
//	g, err := guard.New(guard.Config{
//		Trunks:     trunks,
//		Nodes:      nodeIPs,   // every node's resolved IP (dispatcher specs)
//		Untrusted:  action(cfg.Security.Untrusted == config.UntrustedReject),
//		RateAction: action(cfg.Limits.Action == config.LimitReply503),
//		Limits: guard.LimiterConfig{
//			InviteRate: ps.InviteRate, InviteBurst: ps.InviteBurst,
//			RequestRate: ps.RequestRate, RequestBurst: ps.RequestBurst, MaxSources: ps.MaxSources,
//			GlobalInviteRate: gl.InviteRate, GlobalInviteBurst: gl.InviteBurst,
//		},
//		Message:  guard.MessageLimits(cfg.Limits.Message), // same fields
//		TCP:      guard.TCPLimits(cfg.Limits.TCP),         // same fields
//		OnReject: func(r guard.Reason) { rec.Rejected(r.String()) },
//	})
//	for _, w := range cfg.Warnings() { log.Warn(w) } // "trunks: none configured..."
//
// (action(true) is guard.Reply, action(false) guard.Drop.) On reload, after
// the node set is updated, call g.SetTrunks(trunks, nodeIPs): "trunks" can
// be a live key; security.* and limits.* need a restart.
//
// In Proxy.Start, give sipgo the read filter, never returning an error (an
// error stops sipgo's UDP reader for good):
//
//	filter := g.ReadFilter()
//	sipgo.NewUA(...,
//		sipgo.WithUserAgentTransportLayerOptions(sip.WithTransportLayerReadFilter(
//			func(p sip.TransportReadProps, b []byte) ([]byte, error) {
//				return filter(p.Transport, p.RemoteAddr, b), nil
//			})))
//
// In bind, wrap the TCP listener, and for TLS wrap the TLS listener built
// over a plain one (net.Listen, then tls.NewListener, then g.Listener), so
// that limits read plaintext and the read timeout bounds the handshake:
//
//	ln = g.Listener(ln)                                 // tcp
//	ln = g.Listener(tls.NewListener(tcpLn, tlsConfig))  // tls
//
// and leave sipgo's TransportTCP ReadTimeout unset: the wrapper owns the
// read deadlines.
//
// At the very top of Proxy.handle (before trackInvite, metrics and
// checkRequest), and in onWire for an ACK before it is forwarded:
//
//	ap, _ := netip.ParseAddrPort(req.Source())
//	to := req.To()
//	d := g.Admit(guard.Request{
//		Source: ap.Addr(), Transport: req.Transport(), Method: string(req.Method),
//		InDialog: to != nil && tagOf(to.Params) != "",
//		RequestURIHost: req.Recipient.Host,
//		Header: func(name string) string {
//			if h := req.GetHeader(name); h != nil {
//				return h.Value()
//			}
//			return ""
//		},
//	})
//	if !d.Admitted() {
//		switch d.Code {
//		case 403:
//			p.respond(req, tx, 403, "Forbidden")
//		case 503:
//			p.respond(req, tx, 503, "Service Unavailable", p.retryAfter)
//		}
//		return // Code 0: silent drop; ACKs always get 0
//	}
//
// The refusal is already counted (OnReject); do not count it again.
package guard
