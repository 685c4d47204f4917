package guard

import (
	"errors"
	"math"
	"math/bits"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// LimiterConfig sets the token buckets. A rate is in events per second; a
// rate of 0 turns its bucket off. A burst is how many events a full bucket
// lets through at once (at least 1 when its rate is set).
type LimiterConfig struct {
	// InviteRate and InviteBurst: new calls (INVITE without To tag) per
	// source.
	InviteRate  float64
	InviteBurst int
	// RequestRate and RequestBurst: every request per source.
	RequestRate  float64
	RequestBurst int
	// GlobalInviteRate and GlobalInviteBurst: new calls from all sources
	// together.
	GlobalInviteRate  float64
	GlobalInviteBurst int
	// MaxSources bounds the sources tracked at once; memory is allocated
	// for them up front and never grows.
	MaxSources int
}

// Verdict is a limiter's answer.
type Verdict uint8

const (
	// Allowed: within every bucket.
	Allowed Verdict = iota
	// LimitedSource: over the source's request or new-call bucket.
	LimitedSource
	// LimitedGlobal: over the global new-call bucket.
	LimitedGlobal
)

// Reason returns the refusal reason of v (ReasonNone for Allowed).
func (v Verdict) Reason() Reason {
	switch v {
	case LimitedSource:
		return ReasonRateSource
	case LimitedGlobal:
		return ReasonRateGlobal
	}
	return ReasonNone
}

// ways is the associativity of the source table: a source can live in one
// of 8 slots of its set; a new source takes the least recently seen one.
const ways = 8

// Limiter holds per-source and global token buckets. Buckets follow GCRA
// (the generic cell rate algorithm): a bucket is one timestamp, the
// theoretical arrival time of the next event, which behaves exactly like a
// token bucket of the same rate and burst.
//
// Per-source state lives in a fixed table of MaxSources entries (rounded up
// to a multiple of 8), set-associative and approximately LRU: memory stays
// flat however many distinct (spoofed) sources send. A source pushed out
// starts again with a full bucket, so a flood of fresh addresses can only
// make the limiter forget, never refuse, a well-behaved source; the global
// cap is what bounds such a flood. IPv6 sources are keyed by their /64,
// since one host usually holds a whole /64.
//
// Allow takes one of 1024 striped locks for a few nanoseconds; the global
// bucket is a lock-free compare-and-swap. It never allocates.
type Limiter struct {
	invite, request bucketParams
	global          bucketParams

	globalTAT atomic.Int64

	entries []entry // nsets*ways, nil when no per-source bucket is on
	nsets   uint64
	locks   []paddedMutex
	seed0   uint64
	seed1   uint64
	counted atomic.Int64 // slots in use
}

type bucketParams struct {
	interval int64 // ns per event; 0: bucket off
	tau      int64 // tolerance: interval * (burst-1)
}

func newBucket(rate float64, burst int) (bucketParams, error) {
	if rate < 0 || math.IsNaN(rate) || math.IsInf(rate, 0) {
		return bucketParams{}, errors.New("rate must be >= 0")
	}
	if rate == 0 {
		return bucketParams{}, nil
	}
	if burst < 1 {
		return bucketParams{}, errors.New("burst must be >= 1 when the rate is set")
	}
	iv := int64(float64(time.Second) / rate)
	if iv < 1 {
		iv = 1
	}
	return bucketParams{interval: iv, tau: iv * int64(burst-1)}, nil
}

// allow applies GCRA to the bucket whose state is *tat at time now.
func (b bucketParams) allow(tat *int64, now int64) bool {
	t := *tat
	if t < now {
		t = now
	}
	if t-now > b.tau {
		return false
	}
	*tat = t + b.interval
	return true
}

type entry struct {
	hi, lo     uint64 // source key
	seen       int64  // last request, ns; 0: free slot
	inviteTAT  int64
	requestTAT int64
}

type paddedMutex struct {
	sync.Mutex
	_ [56]byte
}

// NewLimiter builds a limiter. With every rate 0 it allows everything.
func NewLimiter(cfg LimiterConfig) (*Limiter, error) {
	var l Limiter
	var err error
	if l.invite, err = newBucket(cfg.InviteRate, cfg.InviteBurst); err != nil {
		return nil, errors.New("guard: per-source invite " + err.Error())
	}
	if l.request, err = newBucket(cfg.RequestRate, cfg.RequestBurst); err != nil {
		return nil, errors.New("guard: per-source request " + err.Error())
	}
	if l.global, err = newBucket(cfg.GlobalInviteRate, cfg.GlobalInviteBurst); err != nil {
		return nil, errors.New("guard: global invite " + err.Error())
	}
	if l.invite.interval > 0 || l.request.interval > 0 {
		if cfg.MaxSources < 1 {
			return nil, errors.New("guard: max sources must be >= 1")
		}
		l.nsets = uint64((cfg.MaxSources + ways - 1) / ways)
		l.entries = make([]entry, l.nsets*ways)
		nlocks := 1024
		if uint64(nlocks) > l.nsets {
			nlocks = int(l.nsets)
		}
		l.locks = make([]paddedMutex, nlocks)
		l.seed0, l.seed1 = rand.Uint64(), rand.Uint64()
	}
	return &l, nil
}

// Capacity is the number of sources the table can hold (0 when no
// per-source bucket is on).
func (l *Limiter) Capacity() int {
	if l == nil {
		return 0
	}
	return len(l.entries)
}

// Tracked is the number of table slots in use.
func (l *Limiter) Tracked() int {
	if l == nil {
		return 0
	}
	return int(l.counted.Load())
}

// Allow counts one request from src at now and says whether it is within
// the limits. newCall marks a new call (INVITE without To tag), which also
// draws on the source's and the global new-call buckets. A request refused
// by its source's buckets does not draw on the global one.
func (l *Limiter) Allow(src netip.Addr, newCall bool, now time.Time) Verdict {
	if l == nil {
		return Allowed
	}
	ns := now.UnixNano()
	if l.entries != nil && !l.allowSource(src, newCall, ns) {
		return LimitedSource
	}
	if newCall && !l.allowGlobal(ns) {
		return LimitedGlobal
	}
	return Allowed
}

// AllowExempt is Allow for a source exempt from per-source limits: only a
// new call's global bucket applies.
func (l *Limiter) AllowExempt(newCall bool, now time.Time) Verdict {
	if l == nil || !newCall || l.allowGlobal(now.UnixNano()) {
		return Allowed
	}
	return LimitedGlobal
}

func (l *Limiter) allowGlobal(now int64) bool {
	b := l.global
	if b.interval == 0 {
		return true
	}
	for {
		old := l.globalTAT.Load()
		t := old
		if t < now {
			t = now
		}
		if t-now > b.tau {
			return false
		}
		if l.globalTAT.CompareAndSwap(old, t+b.interval) {
			return true
		}
	}
}

func sourceKey(src netip.Addr) (hi, lo uint64) {
	src = src.Unmap()
	u := u128From(src)
	if src.Is6() {
		u.lo = 0  // the /64
		u.hi ^= 1 // never equal to a 4-in-6 key
	}
	return u.hi, u.lo
}

// mix64 is the murmur3 finalizer.
func mix64(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

func (l *Limiter) allowSource(src netip.Addr, newCall bool, now int64) bool {
	hi, lo := sourceKey(src)
	h := mix64(hi^l.seed0) ^ mix64(lo^l.seed1+0x9e3779b97f4a7c15)
	set, _ := bits.Mul64(h, l.nsets) // uniform in [0, nsets)
	mu := &l.locks[set%uint64(len(l.locks))]
	mu.Lock()
	slots := l.entries[set*ways : set*ways+ways]
	var e *entry
	victim := 0
	for i := range slots {
		s := &slots[i]
		if s.seen != 0 && s.hi == hi && s.lo == lo {
			e = s
			break
		}
		if s.seen < slots[victim].seen {
			victim = i
		}
	}
	if e == nil {
		e = &slots[victim]
		if e.seen == 0 {
			l.counted.Add(1)
		}
		*e = entry{hi: hi, lo: lo}
	}
	if now <= 0 {
		now = 1
	}
	e.seen = now
	ok := true
	if l.request.interval > 0 && !l.request.allow(&e.requestTAT, now) {
		ok = false
	} else if newCall && l.invite.interval > 0 && !l.invite.allow(&e.inviteTAT, now) {
		ok = false
	}
	mu.Unlock()
	return ok
}
