package session

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors callers branch on.
var (
	// ErrNotFound means the store holds no binding for the Call-ID.
	ErrNotFound = errors.New("session: binding not found")
	// ErrUnavailable means the store cannot answer now (Redis down, queue
	// full); the caller routes by token or answers 481.
	ErrUnavailable = errors.New("session: store unavailable")
	// ErrFull means a bounded store refused a new binding.
	ErrFull = errors.New("session: store full")
)

// DialogState is where a call is in its life.
type DialogState uint8

const (
	// Early: INVITE forwarded, no 2xx yet.
	Early DialogState = iota + 1
	// Confirmed: a 2xx was forwarded; the call is up.
	Confirmed
	// Released: BYE seen (or the INVITE failed); the binding lingers so
	// that retransmissions still route, then disappears.
	Released
)

func (s DialogState) String() string {
	switch s {
	case Early:
		return "early"
	case Confirmed:
		return "confirmed"
	case Released:
		return "released"
	}
	return "unknown"
}

// Binding says which node owns a call.
type Binding struct {
	// CallID is the dialog's Call-ID.
	CallID string
	// NodeID names the owning node.
	NodeID string
	// Attempt is the failover attempt (0-based) whose branch went to NodeID;
	// with the inbound branch it lets any instance rebuild the downstream
	// branch of the INVITE to CANCEL it.
	Attempt int
	// Outbound is true when the node originated the call (the balancer acts
	// as the node's outbound proxy).
	Outbound bool
	// Via is the sent-by (host:port) of the Via that the forwarding instance
	// put on the INVITE. An instance that forwards a CANCEL for an INVITE
	// another instance sent must use the same sent-by with the derived
	// branch: nodes match a CANCEL to its INVITE by branch and sent-by
	// (RFC 3261 §17.2.3). Empty when unknown.
	Via string
	// State is the dialog's state.
	State DialogState
	// Expires is when the binding disappears unless refreshed.
	Expires time.Time
}

// Store keeps Call-ID → node bindings. It is consulted for CANCEL and for
// in-dialog requests that carry no usable Record-Route token.
//
// Writes (Bind, Confirm, Touch, Release) must never block SIP forwarding on
// the network: an implementation backed by a remote server queues them and
// returns at once. Lookup may do I/O and must honour ctx.
type Store interface {
	// Bind records an early dialog (b.State is set to Early) that expires
	// after ttl, replacing any binding of b.CallID, Via included (a failover
	// re-binds to the next node).
	Bind(ctx context.Context, b Binding, ttl time.Duration) error
	// Confirm marks the call established on nodeID with the given TTL. It
	// keeps Attempt, Outbound and Via of a live binding; a binding it
	// creates has none of them.
	Confirm(ctx context.Context, callID, nodeID string, ttl time.Duration) error
	// Touch extends a confirmed binding's TTL (in-dialog traffic).
	Touch(ctx context.Context, callID string, ttl time.Duration) error
	// Release marks the call ended; the binding lingers for linger.
	Release(ctx context.Context, callID string, linger time.Duration) error
	// Lookup returns the binding of callID, or ErrNotFound.
	Lookup(ctx context.Context, callID string) (Binding, error)
	// Close stops background work and releases resources.
	Close() error
}
