package session

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// MemoryOptions configures NewMemory. A zero field takes the default given in
// its comment.
type MemoryOptions struct {
	// MaxDialogs bounds the number of bindings held. A Bind or Confirm of a
	// new Call-ID beyond it returns ErrFull; existing Call-IDs can still be
	// re-bound and updated. Expired bindings count until they are swept
	// (default 1000000).
	MaxDialogs int
	// Shards is the number of independently locked parts of the map; a power
	// of two (default 64).
	Shards int
	// SweepInterval is how often expired bindings are removed (default 1s).
	SweepInterval time.Duration
	// Now is the clock (default time.Now). Tests inject a fake clock.
	Now func() time.Time
	// OnActive, when set, is called with +1 for a node when a binding becomes
	// Confirmed on it, and with -1 when a Confirmed binding stops being so:
	// Release, expiry, a re-Bind, or a Confirm to another node (-1 for the old
	// node, then +1 for the new). An expired binding yields exactly one -1,
	// whether the sweeper or a later call finds it.
	//
	// It is called synchronously, from the goroutine of the call that caused
	// the change or from the sweeper, after the shard lock is released.
	// Deltas of one shard are delivered in the order they happened, so a
	// binding's -1 never overtakes its +1 and counts kept from the deltas
	// never go negative. It must be quick (bump a counter), must not panic,
	// and must not call Bind, Confirm, Touch or Release on the same Memory.
	OnActive func(nodeID string, delta int)
}

// Defaults of MemoryOptions, applied by setDefaults.
const (
	defaultMaxDialogs    = 1_000_000
	defaultShards        = 64
	defaultSweepInterval = time.Second
)

// Validate reports the first option NewMemory cannot use, naming it. Zero
// values are valid: they mean the default.
func (o MemoryOptions) Validate() error {
	switch {
	case o.MaxDialogs < 0:
		return fmt.Errorf("session: max_dialogs (%d) must not be negative", o.MaxDialogs)
	case o.Shards < 0:
		return fmt.Errorf("session: shards (%d) must not be negative", o.Shards)
	case o.Shards&(o.Shards-1) != 0:
		return fmt.Errorf("session: shards (%d) must be a power of two", o.Shards)
	case o.Shards > 1<<16:
		return fmt.Errorf("session: shards (%d) must be at most %d", o.Shards, 1<<16)
	case o.SweepInterval < 0:
		return fmt.Errorf("session: sweep_interval (%s) must not be negative", o.SweepInterval)
	}
	return nil
}

// setDefaults fills the zero fields of o; it is the only place defaults are
// applied.
func (o *MemoryOptions) setDefaults() {
	if o.MaxDialogs == 0 {
		o.MaxDialogs = defaultMaxDialogs
	}
	if o.Shards == 0 {
		o.Shards = defaultShards
	}
	if o.SweepInterval == 0 {
		o.SweepInterval = defaultSweepInterval
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

// Memory is the embedded Store: a sharded map from Call-ID to a compact entry,
// with TTL expiry. It serves one instance; instances that share calls need a
// shared store instead.
//
// Each shard maps the Call-ID to a slot in a slice of fixed-size entries, and
// an entry names its node and its Via sent-by by indexes into tables of
// interned strings (there are few nodes and fewer instance addresses), so a
// dialog costs its Call-ID (copied once, so that it does not pin the SIP
// message it was parsed from), one map slot and one 40-byte entry. Updates
// write the entry in place and do not allocate. Freed slots are reused.
//
// A Memory must be created with NewMemory and closed with Close.
type Memory struct {
	shards   []shard
	mask     uint64
	seed     maphash.Seed
	max      int64
	now      func() time.Time
	epoch    time.Time // entry times are nanoseconds since epoch
	onActive func(nodeID string, delta int)
	nodes    nodeTable
	vias     nodeTable // Via sent-bys; index noVia is ""
	interval time.Duration

	closed    atomic.Bool
	closeOnce sync.Once
	cancel    context.CancelFunc
	done      chan struct{} // closed when the sweeper has returned

	// n is written by every insert and removal; the padding keeps it off the
	// cache line of the fields above, which every call reads.
	_ [64]byte
	n atomic.Int64 // entries held, expired or not
}

// NewMemory returns a Memory and starts its sweeper goroutine, which Close
// stops. It panics if opts fails Validate: options come from validated
// configuration, so an invalid value here is a programming error.
func NewMemory(opts MemoryOptions) *Memory {
	if err := opts.Validate(); err != nil {
		panic(err)
	}
	opts.setDefaults()
	m := &Memory{
		shards:   make([]shard, opts.Shards),
		mask:     uint64(opts.Shards - 1),
		seed:     maphash.MakeSeed(),
		max:      int64(opts.MaxDialogs),
		now:      opts.Now,
		onActive: opts.OnActive,
		interval: opts.SweepInterval,
		done:     make(chan struct{}),
	}
	m.epoch = m.now()
	m.nodes.init()
	m.vias.init()
	m.vias.intern("") // the first index, noVia
	for i := range m.shards {
		m.shards[i].init()
	}
	ctx, cancel := context.WithCancel(context.Background())
	m.cancel = cancel
	go m.sweepLoop(ctx)
	return m
}

// Bind records an early binding of b.CallID to b.NodeID for ttl, replacing
// any binding of the Call-ID (its Via too: an empty b.Via clears it).
// b.State and b.Expires are ignored. If the replaced binding was Confirmed,
// OnActive reports -1 for its node.
func (m *Memory) Bind(ctx context.Context, b Binding, ttl time.Duration) error {
	if err := m.enter(ctx, "bind"); err != nil {
		return err
	}
	switch {
	case b.CallID == "":
		return errors.New("session: memory bind: empty Call-ID")
	case b.NodeID == "":
		return errors.New("session: memory bind: empty node ID")
	case b.Attempt < 0 || b.Attempt > math.MaxInt32:
		return fmt.Errorf("session: memory bind: attempt %d out of range", b.Attempt)
	case ttl <= 0:
		return fmt.Errorf("session: memory bind: ttl %s must be positive", ttl)
	}
	now := m.clock()
	e := entry{
		expires:  now + int64(ttl),
		attempt:  int32(b.Attempt),
		node:     m.nodes.intern(b.NodeID),
		via:      m.vias.intern(b.Via),
		state:    Early,
		outbound: b.Outbound,
	}
	s := m.shard(b.CallID)
	var ev events
	var err error
	s.mu.Lock()
	if i, ok := m.live(s, b.CallID, now, &ev); ok {
		old := &s.slots[i]
		if old.state == Confirmed {
			ev.add(old.node, -1)
		}
		e.callID = old.callID
		*old = e
	} else {
		err = m.insert(s, b.CallID, e)
	}
	m.unlock(s, &ev)
	return err
}

// Confirm marks the binding of callID Confirmed on nodeID, expiring ttl from
// now, and creates it if there is none (keeping Attempt, Outbound and Via of
// an existing binding; a created one has an empty Via). OnActive reports +1
// on the transition into Confirmed, and -1 then +1 when the node changes;
// confirming twice counts once.
func (m *Memory) Confirm(ctx context.Context, callID, nodeID string, ttl time.Duration) error {
	if err := m.enter(ctx, "confirm"); err != nil {
		return err
	}
	switch {
	case callID == "":
		return errors.New("session: memory confirm: empty Call-ID")
	case nodeID == "":
		return errors.New("session: memory confirm: empty node ID")
	case ttl <= 0:
		return fmt.Errorf("session: memory confirm: ttl %s must be positive", ttl)
	}
	now := m.clock()
	node := m.nodes.intern(nodeID)
	s := m.shard(callID)
	var ev events
	var err error
	s.mu.Lock()
	if i, ok := m.live(s, callID, now, &ev); ok {
		e := &s.slots[i]
		switch {
		case e.state != Confirmed:
			ev.add(node, +1)
		case e.node != node:
			ev.add(e.node, -1)
			ev.add(node, +1)
		}
		e.state = Confirmed
		e.node = node
		e.expires = now + int64(ttl)
	} else {
		err = m.insert(s, callID, entry{expires: now + int64(ttl), node: node, state: Confirmed})
		if err == nil {
			ev.add(node, +1)
		}
	}
	m.unlock(s, &ev)
	return err
}

// Touch extends the binding of callID to expire no sooner than ttl from now;
// it never shortens it. It returns ErrNotFound if there is no live binding or
// the binding is Released.
func (m *Memory) Touch(ctx context.Context, callID string, ttl time.Duration) error {
	if err := m.enter(ctx, "touch"); err != nil {
		return err
	}
	now := m.clock()
	s := m.shard(callID)
	var ev events
	err := ErrNotFound
	s.mu.Lock()
	if i, ok := m.live(s, callID, now, &ev); ok && s.slots[i].state != Released {
		e := &s.slots[i]
		e.expires = max(e.expires, now+int64(ttl))
		err = nil
	}
	m.unlock(s, &ev)
	return err
}

// Release marks the binding of callID Released and makes it expire linger
// from now (a linger of zero or less hides it at once). OnActive reports -1
// if it was Confirmed. It returns ErrNotFound if there is no live binding.
func (m *Memory) Release(ctx context.Context, callID string, linger time.Duration) error {
	if err := m.enter(ctx, "release"); err != nil {
		return err
	}
	now := m.clock()
	s := m.shard(callID)
	var ev events
	err := ErrNotFound
	s.mu.Lock()
	if i, ok := m.live(s, callID, now, &ev); ok {
		e := &s.slots[i]
		if e.state == Confirmed {
			ev.add(e.node, -1)
		}
		e.state = Released
		e.expires = now + int64(linger)
		err = nil
	}
	m.unlock(s, &ev)
	return err
}

// Lookup returns the binding of callID, or ErrNotFound if there is none or it
// has expired (an expired binding is invisible before it is swept).
func (m *Memory) Lookup(ctx context.Context, callID string) (Binding, error) {
	if err := m.enter(ctx, "lookup"); err != nil {
		return Binding{}, err
	}
	now := m.clock()
	s := m.shard(callID)
	s.mu.RLock()
	i, ok := s.index[callID]
	var e entry
	if ok {
		e = s.slots[i]
	}
	s.mu.RUnlock()
	if !ok || e.expires <= now {
		return Binding{}, ErrNotFound
	}
	return Binding{
		CallID:   callID,
		NodeID:   m.nodes.id(e.node),
		Attempt:  int(e.attempt),
		Outbound: e.outbound,
		Via:      m.vias.id(e.via),
		State:    e.state,
		Expires:  m.epoch.Add(time.Duration(e.expires)),
	}, nil
}

// Close stops the sweeper and waits for it to return. Later calls of the
// Store methods return ErrUnavailable. Close is idempotent.
func (m *Memory) Close() error {
	m.closeOnce.Do(func() {
		m.closed.Store(true)
		m.cancel()
		<-m.done
	})
	return nil
}

// Len returns the number of bindings held, including expired ones the
// sweeper has not removed yet.
func (m *Memory) Len() int {
	return int(m.n.Load())
}

// ActiveByNode counts the Confirmed, unexpired bindings of each node, for the
// admin API. Nodes with none are absent. It visits every binding, one shard at
// a time under its read lock, so it costs O(Len) and is not for hot paths.
func (m *Memory) ActiveByNode() map[string]int {
	now := m.clock()
	var counts []int
	for si := range m.shards {
		s := &m.shards[si]
		s.mu.RLock()
		for i := range s.slots {
			e := &s.slots[i]
			if e.state != Confirmed || e.expires <= now {
				continue
			}
			if int(e.node) >= len(counts) {
				counts = append(counts, make([]int, int(e.node)+1-len(counts))...)
			}
			counts[e.node]++
		}
		s.mu.RUnlock()
	}
	out := make(map[string]int)
	for node, n := range counts {
		if n > 0 {
			out[m.nodes.id(uint32(node))] = n
		}
	}
	return out
}

// enter is the check at the top of every Store method: a cancelled context
// or a closed Memory fails the call before it touches any state.
func (m *Memory) enter(ctx context.Context, op string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("session: memory %s: %w", op, err)
	}
	if m.closed.Load() {
		return fmt.Errorf("session: memory %s: closed: %w", op, ErrUnavailable)
	}
	return nil
}

// clock returns the current time in entry units: nanoseconds since m.epoch.
// With the default clock the difference is monotonic, so wall-clock steps do
// not expire or revive bindings.
func (m *Memory) clock() int64 {
	return int64(m.now().Sub(m.epoch))
}

func (m *Memory) shard(callID string) *shard {
	return &m.shards[maphash.String(m.seed, callID)&m.mask]
}

// live returns the slot of the unexpired binding of callID. An expired
// binding found on the way is removed, and its -1 (if it was Confirmed) is
// added to ev: removal under the shard lock is what makes that -1 happen
// once, whoever finds the binding first. s.mu must be held for writing.
func (m *Memory) live(s *shard, callID string, now int64, ev *events) (uint32, bool) {
	i, ok := s.index[callID]
	if !ok {
		return 0, false
	}
	if s.slots[i].expires > now {
		return i, true
	}
	if s.slots[i].state == Confirmed {
		ev.add(s.slots[i].node, -1)
	}
	delete(s.index, callID)
	s.release(i)
	m.n.Add(-1)
	return 0, false
}

// insert adds a binding of a Call-ID the shard does not hold, or returns
// ErrFull. s.mu must be held for writing.
func (m *Memory) insert(s *shard, callID string, e entry) error {
	if m.n.Add(1) > m.max {
		m.n.Add(-1)
		return ErrFull
	}
	// The key is copied: the caller's Call-ID usually points into the whole
	// SIP message it was parsed from, which must not live as long as the call.
	key := strings.Clone(callID)
	e.callID = key
	i := s.alloc()
	s.slots[i] = e
	s.index[key] = i
	return nil
}

// unlock releases s.mu and then delivers ev in shard order. The turn is
// taken while the lock is still held, so deltas are delivered in the order
// the changes were made, yet OnActive runs with no lock held.
func (m *Memory) unlock(s *shard, ev *events) {
	if ev.n == 0 || m.onActive == nil {
		s.mu.Unlock()
		return
	}
	turn := s.takeTurn()
	s.mu.Unlock()
	m.deliver(s, turn, ev.list[:ev.n])
}

func (m *Memory) deliver(s *shard, turn uint64, evs []event) {
	s.awaitTurn(turn)
	defer s.endTurn()
	for _, e := range evs {
		m.onActive(m.nodes.id(e.node), int(e.delta))
	}
}

func (m *Memory) sweepLoop(ctx context.Context) {
	defer close(m.done)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.sweep()
		}
	}
}

// sweepChunk is how many slots a sweep visits per hold of a shard lock. A
// linear pass over entries costs a few nanoseconds each, so a hold stays in
// the tens of microseconds however full the shard is.
const sweepChunk = 4096

// sweep removes expired bindings, shard by shard and, within a shard, chunk
// by chunk, releasing the lock in between so that SIP writes never wait long
// behind it.
func (m *Memory) sweep() {
	var evs []event
	for si := range m.shards {
		s := &m.shards[si]
		for start := 0; ; start += sweepChunk {
			evs = evs[:0]
			now := m.clock()
			s.mu.Lock()
			if start >= len(s.slots) {
				s.mu.Unlock()
				break
			}
			removed := 0
			for i := start; i < min(start+sweepChunk, len(s.slots)); i++ {
				e := &s.slots[i]
				if e.state == 0 || e.expires > now {
					continue
				}
				if e.state == Confirmed {
					evs = append(evs, event{node: e.node, delta: -1})
				}
				delete(s.index, e.callID)
				s.release(uint32(i))
				removed++
			}
			m.n.Add(int64(-removed))
			if len(evs) == 0 || m.onActive == nil {
				s.mu.Unlock()
				continue
			}
			turn := s.takeTurn()
			s.mu.Unlock()
			m.deliver(s, turn, evs)
		}
	}
}

// entry is a binding as stored: 40 bytes, with the node and the Via sent-by
// as indexes into their tables and times relative to Memory.epoch.
type entry struct {
	// callID is the map key (the same string, not a copy); it lets the
	// sweeper walk the slots in order instead of the map.
	callID   string
	expires  int64 // nanoseconds since Memory.epoch
	attempt  int32
	node     uint32      // node table index; in a free slot, the next free slot
	via      uint32      // Via table index; noVia when unknown
	state    DialogState // 0 in a free slot
	outbound bool
}

// noSlot ends a shard's free list.
const noSlot = math.MaxUint32

// noVia is the index of the empty Via in Memory.vias, interned first, so
// that a zero entry has no Via.
const noVia = 0

// shard is one independently locked part of a Memory.
type shard struct {
	mu    sync.RWMutex
	index map[string]uint32 // Call-ID → slot
	slots []entry
	free  uint32 // head of the free list threaded through entry.node

	// OnActive deliveries of this shard are ordered by turns: a turn is
	// taken under mu, and deliveries wait for their turn (ticket lock).
	next    uint64 // next turn to hand out; guarded by mu
	served  atomic.Uint64
	turnMu  sync.Mutex
	turnCV  sync.Cond
	waiting int // guarded by turnMu

	_ [64]byte // keeps neighbouring shards' locks off one cache line
}

func (s *shard) init() {
	s.index = make(map[string]uint32)
	s.free = noSlot
	s.turnCV.L = &s.turnMu
}

// alloc returns a free slot, growing the slice if none is free.
func (s *shard) alloc() uint32 {
	if i := s.free; i != noSlot {
		s.free = s.slots[i].node
		return i
	}
	s.slots = append(s.slots, entry{})
	return uint32(len(s.slots) - 1)
}

// release puts slot i on the free list.
func (s *shard) release(i uint32) {
	s.slots[i] = entry{node: s.free}
	s.free = i
}

// takeTurn hands out the next delivery turn; s.mu must be held.
func (s *shard) takeTurn() uint64 {
	t := s.next
	s.next++
	return t
}

// awaitTurn returns once every earlier turn of the shard has been delivered.
func (s *shard) awaitTurn(t uint64) {
	if s.served.Load() == t {
		return
	}
	s.turnMu.Lock()
	s.waiting++
	for s.served.Load() != t {
		s.turnCV.Wait()
	}
	s.waiting--
	s.turnMu.Unlock()
}

// endTurn lets the next turn go.
func (s *shard) endTurn() {
	s.served.Add(1)
	s.turnMu.Lock()
	if s.waiting > 0 {
		s.turnCV.Broadcast()
	}
	s.turnMu.Unlock()
}

// events collects the OnActive deltas of one Store call: at most a -1 for an
// expired or replaced binding and a +1 for the new one.
type events struct {
	list [2]event
	n    int
}

type event struct {
	node  uint32
	delta int8
}

func (ev *events) add(node uint32, delta int8) {
	ev.list[ev.n] = event{node: node, delta: delta}
	ev.n++
}

// nodeTable interns node IDs (and, in a second table, Via sent-bys): the set
// of nodes is small, so entries hold a 4-byte index instead of a string each.
// The table only grows; node IDs come from configuration, and a Via sent-by
// is the address of a balancer instance. Reads are lock-free.
type nodeTable struct {
	mu  sync.Mutex // serialises additions
	cur atomic.Pointer[nodeSet]
}

// nodeSet is an immutable version of the table; an index valid in one version
// is valid in every later one.
type nodeSet struct {
	ids   []string
	index map[string]uint32
}

func (t *nodeTable) init() {
	t.cur.Store(&nodeSet{index: map[string]uint32{}})
}

func (t *nodeTable) intern(id string) uint32 {
	if i, ok := t.cur.Load().index[id]; ok {
		return i
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.cur.Load()
	if i, ok := old.index[id]; ok {
		return i
	}
	id = strings.Clone(id)
	i := uint32(len(old.ids))
	next := &nodeSet{
		ids:   append(old.ids[:len(old.ids):len(old.ids)], id),
		index: maps.Clone(old.index),
	}
	next.index[id] = i
	t.cur.Store(next)
	return i
}

func (t *nodeTable) id(i uint32) string {
	return t.cur.Load().ids[i]
}

// Interface guards.
var _ Store = (*Memory)(nil)
