// Package sip is sipbalancer's proxy: the listeners facing carriers and
// FreeSWITCH nodes, and transaction-stateful forwarding per RFC 3261 §16 on
// top of sipgo's transport and transaction layers.
//
// What it does, per request:
//
//   - Guards (guard.go): SIP version (505), required and duplicated
//     single-value headers (400), CSeq method (400), Proxy-Require (420),
//     Max-Forwards (483 at 0; OPTIONS at 0 is answered by us), loop
//     detection per §16.3 step 4 (482) using a loop hash kept in our Via
//     branch.
//   - New call from a carrier (out-of-dialog INVITE): 100 Trying at once,
//     dispatcher.Pick gives the first choice and fallbacks, the Call-ID is
//     bound to the node in the affinity store (never waiting on the
//     network), and the INVITE is forwarded with our Via and a Record-Route
//     whose URI carries a signed token naming the node. Serial failover
//     (failover.go): a node that sends no 18x or final response within the
//     invite timeout is abandoned (CANCELled if it sent 100), and so is one
//     that answers a failover code before any 18x; both count as passive
//     failures and the next candidate is tried. After an 18x or 2xx the call
//     belongs to that node. Nothing left: 503 with Retry-After.
//   - In-dialog requests (indialog.go): loose routing. Our Route entries are
//     removed; the token in them names the node and, verified against the
//     From or To tag, the direction. Toward the node the request goes to the
//     node's configured address; toward the carrier it goes to the next
//     Route or the Request-URI, and only when it came from a node. Without a
//     usable token the affinity store is asked by Call-ID; else 481. ACK for
//     2xx is forwarded statelessly, end to end. BYE releases the binding
//     after a linger.
//   - CANCEL: sipgo answers a CANCEL that matches a server transaction with
//     200 and the INVITE with 487; we then CANCEL our branch (only once it
//     has sent a provisional response, §9.1). A CANCEL that matches nothing
//     here is sent to the node the store names, on the branch that any
//     instance derives the same way (branch.go), else 481.
//   - Node toward carrier, out of dialog (outbound.go): the balancer as the
//     node's outbound proxy; forwarded by Route or Request-URI and
//     record-routed with a token naming the originating node.
//   - OPTIONS to the balancer itself: 200 while some node takes new calls,
//     else 503.
//
// Rules kept throughout: the inbound message is never mutated (the outbound
// copy shares unchanged header values and replaces what changes); 100
// Trying is hop by hop and never relayed; ACK for a non-2xx final is
// absorbed by the server transaction; 2xx retransmissions are relayed
// (ClientTx.OnRetransmission while the client transaction lives, the stray
// response handler after); a 2xx that arrives on a branch we abandoned is
// ACKed and sent a BYE so that no node keeps a half call; every UDP message
// to a node leaves from the listener socket, so answers come back to it;
// a wildcard UDP listener answers each peer from the address the peer
// wrote to (replySources), so a carrier sending to a VIP hears from it.
//
// What it deliberately does not do: forking (parallel branches), strict
// routing toward nodes, or rewriting SDP.
package sip
