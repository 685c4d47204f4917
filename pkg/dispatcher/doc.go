// Package dispatcher chooses the FreeSWITCH node for each new call.
//
// # Contract
//
// A snapshot goes in, an ordered list of candidates comes out: the first
// choice, then the fallbacks the proxy tries in order (serial failover) when a
// branch times out or fails before any 18x. Picking is on the hot path of
// every new call, so it never blocks, takes no lock, does no I/O and makes no
// allocation (the caller passes dst with the capacity it wants, typically
// failover.max_attempts, and reuses it). The benchmarks in
// dispatcher_bench_test.go hold the targets: <= 100 ns/op with 64 nodes,
// 0 allocs/op.
//
// The node set lives in an immutable Snapshot that a Dispatcher swaps
// atomically on Update (config reload). What changes all the time — a node's
// state, its active and in-flight calls, its ESL load report — lives in
// atomics shared by every snapshot that holds the node, so health and the
// proxy write it without republishing anything, and it survives reloads.
//
// Every policy selects among Available nodes only: state StateUp and, when
// MaxCalls is set, fewer than MaxCalls calls active or in flight.
//
// # When nothing is available
//
// If no node is Available, Pick appends nothing. The caller answers the new
// call 503 with Retry-After and counts it (dispatch_all_unavailable_total);
// OPTIONS to the balancer itself get 503 too (see Dispatcher.AnyAvailable),
// so carriers fail over to another trunk. Unlike resolvers that "spray at
// random" when every upstream looks down, a SIP balancer must not: a call
// sent to a node that is down or full fails after a timeout instead of
// failing over at once.
//
// # Which policy
//
//   - least_load (default): the power of two random choices on a load score
//     built from ESL figures and this instance's own calls. Best when nodes
//     differ in capacity or in how heavy their calls are; it keeps several
//     balancer instances from herding onto the same node between reports.
//   - weighted_round_robin: smooth, exact shares by Weight. For identical
//     nodes, or when there is no ESL.
//   - hash: rendezvous hashing on a Key (Call-ID or a header). For calls that
//     must meet on one node (conferences, call pickup) with no shared state;
//     a node leaving moves only its own keys.
//   - priority: groups by Priority, round robin inside a group, spilling to
//     the next group only when the earlier ones have no Available node. For
//     active/standby sites.
//
// # Retired nodes
//
// A node removed by a reload is retired rather than forgotten: it drains (no
// new calls) but Node and NodeBySource still find it, so the in-dialog
// requests of calls it holds keep routing until the calls end.
package dispatcher
