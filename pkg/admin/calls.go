package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/sipbalancer/sipbalancer/pkg/session"
)

// callsPrefix starts /api/v1/calls/{call-id}; the rest of the path, once
// unescaped, is the Call-ID.
const callsPrefix = "/api/v1/calls/"

// callJSON says which node a call is pinned to and why.
type callJSON struct {
	CallID string `json:"call_id"`
	// Node is the owning node; NodeState its state now ("" when this
	// instance does not know the node).
	Node      string `json:"node"`
	NodeState string `json:"node_state"`
	// State is early (INVITE forwarded, no answer yet), confirmed (answered)
	// or released (BYE seen; the binding lingers for retransmissions).
	State string `json:"state"`
	// Attempt is the failover attempt (0-based) whose branch went to Node:
	// above 0, earlier candidates failed or did not answer in time.
	Attempt int `json:"attempt"`
	// Outbound: the node originated the call (the balancer is its outbound
	// proxy).
	Outbound bool `json:"outbound"`
	// Via is the sent-by of the forwarding instance's Via on the INVITE.
	Via              string    `json:"via,omitempty"`
	Expires          time.Time `json:"expires"`
	ExpiresInSeconds float64   `json:"expires_in_seconds"`
	// Why explains the binding in a sentence.
	Why string `json:"why"`
	// Source says where the answer comes from and what routes the call.
	Source string `json:"source"`
}

// sourceNote is the same for every answer: the binding shown is the
// affinity store's, but in-dialog requests route by their token.
const sourceNote = "affinity store (%s) binding for the Call-ID. In-dialog requests are routed by the signed " +
	"node token in their Route header (our Record-Route), on any instance, without this binding; the binding " +
	"serves CANCEL, requests without a usable token, and re-homing."

// getCall looks a Call-ID up in the affinity store.
func (s *Server) getCall(w http.ResponseWriter, r *http.Request) {
	callID, err := url.PathUnescape(r.PathValue("callid"))
	if err != nil {
		writeError(w, http.StatusBadRequest, "Call-ID is not a valid escaped path: %v", err)
		return
	}
	if callID == "" {
		writeError(w, http.StatusBadRequest, "no Call-ID: use %s{call-id}", callsPrefix)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), storeTimeout)
	defer cancel()
	b, err := s.app.Store().Lookup(ctx, callID)
	switch {
	case errors.Is(err, session.ErrNotFound):
		writeError(w, http.StatusNotFound, "no binding for Call-ID %q (never seen by the store, or expired)", callID)
		return
	case err != nil:
		writeError(w, http.StatusServiceUnavailable, "affinity store cannot answer: %v", err)
		return
	}
	kind := "memory"
	if s.app.Redis() != nil {
		kind = "redis"
	}
	now := time.Now()
	c := callJSON{
		CallID: b.CallID, Node: b.NodeID, State: b.State.String(), Attempt: b.Attempt,
		Outbound: b.Outbound, Via: b.Via, Expires: b.Expires,
		ExpiresInSeconds: b.Expires.Sub(now).Round(time.Millisecond).Seconds(),
		Source:           fmt.Sprintf(sourceNote, kind),
	}
	if c.CallID == "" {
		c.CallID = callID
	}
	if n := s.app.Dispatcher().Node(b.NodeID); n != nil {
		c.NodeState = n.State().String()
	}
	c.Why = why(b)
	writeJSON(w, http.StatusOK, c)
}

// why puts a binding into words.
func why(b session.Binding) string {
	var how string
	switch {
	case b.Outbound:
		how = fmt.Sprintf("node %s originated the call through the balancer", b.NodeID)
	case b.Attempt == 0:
		how = fmt.Sprintf("the dispatcher's first choice for the INVITE was %s", b.NodeID)
	default:
		how = fmt.Sprintf("the INVITE went to %s on failover attempt %d, after earlier candidates failed or did not answer in time", b.NodeID, b.Attempt+1)
	}
	switch b.State {
	case session.Early:
		return how + "; not answered yet"
	case session.Confirmed:
		return how + "; it answered and owns the call"
	case session.Released:
		return how + "; the call has ended and the binding lingers so that retransmissions still route"
	}
	return how
}
