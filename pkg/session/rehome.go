package session

import (
	"context"
	"errors"
	"fmt"
)

// Re-homing gives the dialogs of a dead node a new owner, for node pools
// that share a database and can pick up each other's calls. It is off by
// default: the proxy calls Rehome only when configured to. Every instance
// that notices the dead node may decide a new owner at the same moment, and
// may decide differently; Rehome makes the first decision win and every
// instance follow it.

// errRehomePending is wrapped, with ErrUnavailable, when this instance still
// has unwritten writes that set the Call-ID's node: they would undo the
// re-homing when written.
var errRehomePending = errors.New("unwritten writes of the call would override it; retry")

// Rehome makes toNode the owner of callID if, and only if, its owner is
// still fromNode, in one atomic step in Redis, and returns the owner after
// the call: toNode if this call moved it (or it was already there), or the
// node another instance moved it to first. A call with no live binding gives
// ErrNotFound. It waits for Redis, within LookupTimeout; an unreachable
// Redis gives an error wrapping ErrUnavailable.
//
// A Confirmed binding moves between the nodes' active sets with it, so
// ActiveCounts follows. With OnActive set, a move this instance made is
// reported too (-1 for fromNode, +1 for toNode) if this instance counted the
// call.
func (r *Redis) Rehome(ctx context.Context, callID, fromNode, toNode string) (owner string, err error) {
	if err := r.enter(ctx, "rehome"); err != nil {
		return "", err
	}
	switch {
	case callID == "":
		return "", errors.New("session: redis rehome: empty Call-ID")
	case fromNode == "" || toNode == "":
		return "", errors.New("session: redis rehome: empty node ID")
	}
	var buf [4]*op
	for _, o := range r.overlay.pending(callID, buf[:0]) {
		if o.kind == opBind || o.kind == opConfirm {
			return "", fmt.Errorf("session: redis rehome: %w: %w", ErrUnavailable, errRehomePending)
		}
	}
	sk := r.keys.shard(callID)
	rctx, cancel := context.WithTimeout(ctx, r.opts.LookupTimeout)
	defer cancel()
	now := r.nowMs()
	owner, err = rehomeScript.Run(rctx, r.client, []string{sk.dialog + callID, sk.nodes},
		callID, sk.active, now, now, fromNode, toNode).Text()
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return "", fmt.Errorf("session: redis rehome: %w", cerr)
		}
		r.roundTripFailed(err)
		return "", fmt.Errorf("session: redis rehome: %w: %w", ErrUnavailable, err)
	}
	r.roundTripOK()
	if owner == "" {
		return "", ErrNotFound
	}
	if owner == toNode && r.local != nil {
		r.rehomeLocal(ctx, callID, fromNode, toNode)
	}
	return owner, nil
}

// rehomeLocal moves a call this instance counted from fromNode to toNode in
// the OnActive mirror, keeping its expiry.
func (r *Redis) rehomeLocal(ctx context.Context, callID, fromNode, toNode string) {
	b, err := r.local.Lookup(ctx, callID)
	if err != nil || b.State != Confirmed || b.NodeID != fromNode {
		return
	}
	if left := b.Expires.Sub(r.opts.Now()); left > 0 {
		_ = r.local.Confirm(ctx, callID, toNode, left)
	}
}
