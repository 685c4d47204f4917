package fsemu

import (
	"sync"

	"github.com/emiago/sipgo/sip"
)

// registry holds the node's calls by Call-ID, at most max of them. It keeps
// them in creation order in a ring; when the ring is full the oldest record
// is dropped (and its call, should it still be up, stopped).
//
// Lock order: registry.mu before call.mu, never the reverse.
type registry struct {
	mu   sync.Mutex
	byID map[string]*call
	ring []*call
	head int // index of the oldest record
	size int
}

func newRegistry(max int) *registry {
	return &registry{
		byID: make(map[string]*call),
		ring: make([]*call, max),
	}
}

func (r *registry) get(callID string) *call {
	r.mu.Lock()
	c := r.byID[callID]
	r.mu.Unlock()
	return c
}

// getOrCreate returns the call for callID, creating it with mk if needed.
// A record evicted to make room is returned so the caller can stop it
// outside the registry lock.
func (r *registry) getOrCreate(callID string, mk func() *call) (c, evicted *call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if c := r.byID[callID]; c != nil {
		return c, nil
	}
	c = mk()
	if r.size == len(r.ring) {
		evicted = r.ring[r.head]
		if r.byID[evicted.id] == evicted {
			delete(r.byID, evicted.id)
		}
		r.ring[r.head] = c
		r.head = (r.head + 1) % len(r.ring)
	} else {
		r.ring[(r.head+r.size)%len(r.ring)] = c
		r.size++
	}
	r.byID[callID] = c
	return c, evicted
}

// all returns the calls in creation order.
func (r *registry) all() []*call {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*call, 0, r.size)
	for i := 0; i < r.size; i++ {
		out = append(out, r.ring[(r.head+i)%len(r.ring)])
	}
	return out
}

// observe is hooked into sipgo's transport layer, so it sees every request
// as it arrives, before (and whether or not) a transaction absorbs it. It
// is the only writer of CallRecord.Methods, which therefore lists
// retransmissions, CANCELs and ACKs to non-2xx responses in arrival order.
// It also acts on ACKs (see ackLocked), which need no transaction.
// An initial INVITE opens the record; other requests are recorded only for
// known Call-IDs, so out-of-dialog OPTIONS pings leave no trace.
func (n *Node) observe(msg sip.Message) {
	req, ok := msg.(*sip.Request)
	if !ok {
		return
	}
	cid := req.CallID()
	if cid == nil {
		return
	}
	callID := cid.Value()
	var c *call
	if req.IsInvite() && !hasToTag(req) {
		var evicted *call
		c, evicted = n.calls.getOrCreate(callID, func() *call { return n.newCall(callID, req) })
		if evicted != nil {
			n.evict(evicted)
		}
	} else if c = n.calls.get(callID); c == nil {
		return
	}
	c.mu.Lock()
	if len(c.rec.Methods) < maxMethods {
		c.rec.Methods = append(c.rec.Methods, methodName(req.Method))
	}
	if req.IsAck() {
		c.ackLocked(req)
	}
	c.mu.Unlock()
}

// Calls returns copies of the node's call records, oldest first.
func (n *Node) Calls() []CallRecord {
	calls := n.calls.all()
	out := make([]CallRecord, 0, len(calls))
	for _, c := range calls {
		c.mu.Lock()
		out = append(out, c.recordLocked())
		c.mu.Unlock()
	}
	return out
}

// Call returns a copy of the record for callID.
func (n *Node) Call(callID string) (CallRecord, bool) {
	c := n.calls.get(callID)
	if c == nil {
		return CallRecord{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recordLocked(), true
}

func hasToTag(req *sip.Request) bool {
	to := req.To()
	return to != nil && to.Params.Has("tag")
}

// methodName returns a shared string for the common methods, so records
// do not each keep the parser's copy alive.
func methodName(m sip.RequestMethod) string {
	for _, k := range knownMethods {
		if k == m {
			return string(k)
		}
	}
	return string(m)
}

var knownMethods = [...]sip.RequestMethod{sip.INVITE, sip.ACK, sip.BYE, sip.CANCEL, sip.OPTIONS, sip.INFO,
	sip.UPDATE, sip.PRACK, sip.NOTIFY, sip.MESSAGE, sip.REFER, sip.REGISTER, sip.SUBSCRIBE, sip.PUBLISH}
