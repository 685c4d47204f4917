// Package session keeps dialog affinity: which FreeSWITCH node owns a call,
// so that every later request of the call reaches the same node.
//
// # Where affinity comes from
//
// The proxy resolves the owner of an in-dialog request (and of a CANCEL) in
// this order, and stops at the first answer:
//
//  1. The Record-Route token. Every INVITE we forward carries, in the URI of
//     our Record-Route, a signed token naming the node (token.go). Requests
//     of the dialog bring it back in their Route header, so routing needs no
//     lookup at all and works on any instance that shares the signing key,
//     even while the Store is down. This is the stateless half of affinity.
//  2. The Store, by Call-ID. It answers for requests that carry no usable
//     token (a CANCEL, which has no Route; a peer that drops Record-Route; a
//     token signed with a retired key).
//  3. Neither: the proxy answers 481 Call/Transaction Does Not Exist. It never
//     guesses a node for an in-dialog request.
//
// # Writes never block SIP
//
// Bind, Confirm, Touch and Release sit on the forwarding path, so they must
// not wait on the network. The memory store (Memory) completes them in memory
// under a short per-shard lock. A store backed by a remote server queues them
// for a pipelined flusher and returns at once; when its queue is full it
// drops and counts the write rather than wait, and when the server is down
// it reports ErrUnavailable. Either way the call goes on: the token still
// routes it. Only Lookup may do I/O, and it honours its context's deadline.
//
// # TTL model
//
// A binding lives for a TTL that depends on where the call is, and always
// disappears on its own, so a lost BYE or a crashed instance cannot leave
// bindings behind:
//
//   - Early: Bind, when the INVITE is forwarded (session.early_ttl). A
//     failover re-binds the same Call-ID to the next node; the new binding
//     replaces the old one.
//   - Confirmed: Confirm, when a 2xx is forwarded (session.dialog_ttl).
//     In-dialog traffic calls Touch, which extends the TTL and never shortens
//     it.
//   - Released: Release, on BYE or when the INVITE finally fails. The
//     binding lingers for session.release_linger so that retransmissions of
//     the BYE and its 200 still route, then disappears. Touch does not revive
//     a released binding.
//
// An expired binding is invisible to Lookup at once, even before a sweeper
// removes it.
//
// # Active-call counting
//
// Memory reports, through MemoryOptions.OnActive, +1 for a node when a binding
// becomes Confirmed on it and -1 when a Confirmed binding stops being so:
// Release, expiry, a re-Bind, or a Confirm that moves it to another node.
// Every -1 answers exactly one earlier +1 of the same binding and is
// delivered after it, so the dispatcher can keep per-node active-call counts
// from these deltas alone: the counts never go negative, and because every
// binding expires they never stick either. Memory.ActiveByNode gives the same
// figure by counting, for the admin API.
package session
