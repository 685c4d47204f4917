package session

import (
	"context"
	"errors"
)

// Rehomer is implemented by stores that can move a call to another node
// atomically (re-homing: the calls of a node that is down get a new owner;
// the first instance to decide wins and every instance follows it).
type Rehomer interface {
	// Rehome makes toNode the owner of callID only if fromNode still owns
	// it, and returns the owner after the call: toNode, or whoever another
	// instance chose first. ErrNotFound if there is no binding.
	Rehome(ctx context.Context, callID, fromNode, toNode string) (owner string, err error)
}

var (
	_ Rehomer = (*Memory)(nil)
	_ Rehomer = (*Redis)(nil)
)

// Rehome implements Rehomer for one instance.
func (m *Memory) Rehome(ctx context.Context, callID, fromNode, toNode string) (string, error) {
	if err := m.enter(ctx, "rehome"); err != nil {
		return "", err
	}
	if callID == "" || fromNode == "" || toNode == "" {
		return "", errors.New("session: memory rehome: empty Call-ID or node")
	}
	now := m.clock()
	s := m.shard(callID)
	var ev events
	s.mu.Lock()
	i, ok := m.live(s, callID, now, &ev)
	if !ok {
		m.unlock(s, &ev)
		return "", ErrNotFound
	}
	e := &s.slots[i]
	from := m.nodes.intern(fromNode)
	if e.node == from && e.state != Released {
		to := m.nodes.intern(toNode)
		if e.state == Confirmed {
			ev.add(from, -1)
			ev.add(to, +1)
		}
		e.node = to
	}
	owner := m.nodes.id(e.node)
	m.unlock(s, &ev)
	return owner, nil
}
