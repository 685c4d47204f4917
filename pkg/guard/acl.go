package guard

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Trunk is a carrier the balancer takes traffic from: the networks it
// sends from and, optionally, what its out-of-dialog requests must carry.
type Trunk struct {
	// Name identifies the trunk in logs; unique.
	Name string
	// CIDRs are the networks the trunk sends from (IPv4 and IPv6).
	CIDRs []netip.Prefix
	// RequestURIHost, when set, is the Request-URI host the trunk's
	// out-of-dialog requests must carry (compared case-insensitively).
	RequestURIHost string
	// Header and HeaderValue, when Header is set, name a header the
	// trunk's out-of-dialog requests must carry with exactly this value
	// (the first such header is compared).
	Header, HeaderValue string
	// ExemptFromRateLimits exempts the trunk's sources from the per-source
	// buckets. The global new-call cap still applies: it guards the
	// capacity of the pool, whoever sends.
	ExemptFromRateLimits bool
}

func (t *Trunk) conditional() bool { return t.RequestURIHost != "" || t.Header != "" }

// ACL decides which sources may send to the balancer. It is built once
// from the configuration and never changes: a reload builds a new one and
// swaps it in (Guard.SetTrunks). Lookups are a binary search over the
// disjoint address ranges the trunks' prefixes cut the address space into,
// O(log prefixes), and never allocate.
//
// With no trunks the ACL is open: every source is allowed, as before trunks
// existed. Node addresses are always allowed, and exempt from rate limits.
type ACL struct {
	trunks []Trunk
	open   bool
	v4, v6 rangeTable
	sets   []aclSet
}

// aclSet is what one address range is covered by.
type aclSet struct {
	// trunks cover the range, most specific prefix first, then in
	// configuration order.
	trunks []uint16
	node   bool // a node address
	// exempt: a node, or some covering trunk is exempt from rate limits.
	exempt bool
	// unconditional: a node, or some covering trunk has no R-URI or
	// header condition, so the source alone admits a request.
	unconditional bool
}

// Source is what the address alone says about a sender: enough for the
// UDP read filter and the TCP accept, which see no parsed message.
type Source struct {
	// Admitted: the ACL is open, the source is a node, or some trunk
	// covers it (Conditional says whether that is enough).
	Admitted bool
	// Conditional: every trunk covering the source has an R-URI host or
	// header condition; out-of-dialog requests must pass Check.
	Conditional bool
	// Node: the source is a node of the pool.
	Node bool
	// Exempt: the source skips the per-source rate buckets.
	Exempt bool
}

// NewACL builds an ACL from trunks (none: allow all) and the node
// addresses (always allowed). It copies its arguments.
func NewACL(trunks []Trunk, nodes []netip.Addr) (*ACL, error) {
	a := &ACL{trunks: make([]Trunk, len(trunks)), open: len(trunks) == 0}
	if len(trunks) >= 1<<16-1 {
		return nil, errors.New("guard: too many trunks")
	}
	names := make(map[string]bool, len(trunks))
	var spans4, spans6 []span
	for i, t := range trunks {
		if t.Name == "" {
			return nil, fmt.Errorf("guard: trunk %d has no name", i)
		}
		if names[t.Name] {
			return nil, fmt.Errorf("guard: duplicate trunk name %q", t.Name)
		}
		names[t.Name] = true
		if len(t.CIDRs) == 0 {
			return nil, fmt.Errorf("guard: trunk %q has no sources", t.Name)
		}
		if t.Header == "" && t.HeaderValue != "" {
			return nil, fmt.Errorf("guard: trunk %q has a header value but no header name", t.Name)
		}
		t.CIDRs = slices.Clone(t.CIDRs)
		a.trunks[i] = t
		for _, p := range t.CIDRs {
			s, v6, err := spanOf(p, i)
			if err != nil {
				return nil, fmt.Errorf("guard: trunk %q: %w", t.Name, err)
			}
			if v6 {
				spans6 = append(spans6, s)
			} else {
				spans4 = append(spans4, s)
			}
		}
	}
	nodeIdx := len(trunks)
	for _, n := range nodes {
		if !n.IsValid() {
			continue
		}
		n = n.Unmap()
		s, v6, _ := spanOf(netip.PrefixFrom(n, n.BitLen()), nodeIdx)
		if v6 {
			spans6 = append(spans6, s)
		} else {
			spans4 = append(spans4, s)
		}
	}
	interned := map[string]int32{"": 0}
	a.sets = []aclSet{{}}
	a.v4 = a.buildTable(spans4, nodeIdx, interned)
	a.v6 = a.buildTable(spans6, nodeIdx, interned)
	return a, nil
}

// Open reports whether the ACL has no trunks and so allows every source.
func (a *ACL) Open() bool { return a == nil || a.open }

// Trunks returns the number of trunks.
func (a *ACL) Trunks() int {
	if a == nil {
		return 0
	}
	return len(a.trunks)
}

// Source classifies src by its address alone.
func (a *ACL) Source(src netip.Addr) Source {
	if a == nil {
		return Source{Admitted: true}
	}
	set := a.lookup(src)
	if set.node {
		return Source{Admitted: true, Node: true, Exempt: true}
	}
	if a.open {
		return Source{Admitted: true}
	}
	if len(set.trunks) == 0 {
		return Source{}
	}
	return Source{Admitted: true, Conditional: !set.unconditional, Exempt: set.exempt}
}

// Check decides an out-of-dialog request: it returns the name of the first
// trunk (most specific prefix first, then configuration order) that covers
// src and whose conditions the request meets. ruriHost is the Request-URI
// host; header returns a header's value ("" when absent) and may be nil
// when no trunk has a header condition. A node, or any source when the ACL
// is open, is allowed with trunk "". It never allocates.
func (a *ACL) Check(src netip.Addr, ruriHost string, header func(name string) string) (trunk string, ok bool) {
	if a == nil {
		return "", true
	}
	set := a.lookup(src)
	if set.node || a.open {
		return "", true
	}
	for _, ti := range set.trunks {
		t := &a.trunks[ti]
		if t.RequestURIHost != "" && !strings.EqualFold(trimBrackets(ruriHost), trimBrackets(t.RequestURIHost)) {
			continue
		}
		if t.Header != "" && (header == nil || header(t.Header) != t.HeaderValue) {
			continue
		}
		return t.Name, true
	}
	return "", false
}

// trunkNames lists the names of the trunks covering src, for tests.
func (a *ACL) trunkNames(src netip.Addr) []string {
	var out []string
	for _, ti := range a.lookup(src).trunks {
		out = append(out, a.trunks[ti].Name)
	}
	return out
}

func trimBrackets(h string) string {
	if len(h) >= 2 && h[0] == '[' && h[len(h)-1] == ']' {
		return h[1 : len(h)-1]
	}
	return h
}

func (a *ACL) lookup(src netip.Addr) *aclSet {
	src = src.Unmap()
	var t *rangeTable
	switch {
	case src.Is4():
		t = &a.v4
	case src.Is6():
		t = &a.v6
	default:
		return &a.sets[0]
	}
	return &a.sets[t.find(u128From(src))]
}

// u128 is an address as a 128-bit number (IPv4 in its 4-in-6 form; the two
// families live in separate tables, so ::/0 does not cover IPv4).
type u128 struct{ hi, lo uint64 }

func u128From(ip netip.Addr) u128 {
	b := ip.As16()
	var u u128
	for i := 0; i < 8; i++ {
		u.hi = u.hi<<8 | uint64(b[i])
		u.lo = u.lo<<8 | uint64(b[i+8])
	}
	return u
}

func (u u128) less(v u128) bool { return u.hi < v.hi || (u.hi == v.hi && u.lo < v.lo) }

func (u u128) isMax() bool { return u.hi == ^uint64(0) && u.lo == ^uint64(0) }

func (u u128) inc() u128 {
	u.lo++
	if u.lo == 0 {
		u.hi++
	}
	return u
}

// hostMask returns the mask of the host bits of a /bits prefix (0-128).
func hostMask(bits int) u128 {
	switch {
	case bits <= 0:
		return u128{^uint64(0), ^uint64(0)}
	case bits < 64:
		return u128{^uint64(0) >> bits, ^uint64(0)}
	case bits < 128:
		return u128{0, ^uint64(0) >> (bits - 64)}
	}
	return u128{}
}

// span is one configured prefix as an inclusive address range.
type span struct {
	start, end u128
	bits       int // prefix length in the 128-bit space
	idx        int // trunk index; len(trunks) for a node
}

func spanOf(p netip.Prefix, idx int) (span, bool, error) {
	if !p.IsValid() {
		return span{}, false, fmt.Errorf("invalid prefix %v", p)
	}
	addr, bits := p.Addr(), p.Bits()
	if addr.Is4In6() && bits >= 96 {
		addr, bits = addr.Unmap(), bits-96
	}
	addr = addr.WithZone("")
	v6 := addr.Is6()
	bits16 := bits
	if !v6 {
		bits16 += 96
	}
	start := u128From(netip.PrefixFrom(addr, bits).Masked().Addr())
	m := hostMask(bits16)
	end := u128{start.hi | m.hi, start.lo | m.lo}
	return span{start: start, end: end, bits: bits16, idx: idx}, v6, nil
}

// rangeTable maps disjoint address ranges, sorted by first address, to
// sets. An address before the first start is in set 0 (nothing).
type rangeTable struct {
	starts []u128
	sets   []int32
}

func (t *rangeTable) find(x u128) int32 {
	lo, hi := 0, len(t.starts)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if x.less(t.starts[m]) {
			hi = m
		} else {
			lo = m + 1
		}
	}
	if lo == 0 {
		return 0
	}
	return t.sets[lo-1]
}

// buildTable cuts the address space at every span boundary and records,
// for each piece, the set of spans covering it. Built once per
// configuration: O(boundaries x spans) is fine for any trunk list.
func (a *ACL) buildTable(spans []span, nodeIdx int, interned map[string]int32) rangeTable {
	if len(spans) == 0 {
		return rangeTable{}
	}
	points := make([]u128, 0, 2*len(spans))
	for _, s := range spans {
		points = append(points, s.start)
		if !s.end.isMax() {
			points = append(points, s.end.inc())
		}
	}
	slices.SortFunc(points, func(x, y u128) int {
		switch {
		case x.less(y):
			return -1
		case y.less(x):
			return 1
		}
		return 0
	})
	points = slices.Compact(points)

	var t rangeTable
	var cover []span
	var key []byte
	for _, p := range points {
		cover = cover[:0]
		for _, s := range spans {
			if !p.less(s.start) && !s.end.less(p) {
				cover = append(cover, s)
			}
		}
		slices.SortStableFunc(cover, func(x, y span) int {
			if x.bits != y.bits {
				return y.bits - x.bits
			}
			return x.idx - y.idx
		})
		set := aclSet{}
		key = key[:0]
		for _, s := range cover {
			if s.idx == nodeIdx {
				set.node = true
				continue
			}
			if slices.Contains(set.trunks, uint16(s.idx)) {
				continue
			}
			set.trunks = append(set.trunks, uint16(s.idx))
			tr := &a.trunks[s.idx]
			if tr.ExemptFromRateLimits {
				set.exempt = true
			}
			if !tr.conditional() {
				set.unconditional = true
			}
		}
		if set.node {
			set.exempt, set.unconditional = true, true
			key = append(key, 'n')
		}
		for _, ti := range set.trunks {
			key = append(key, byte(ti>>8), byte(ti))
		}
		id, ok := interned[string(key)]
		if !ok {
			id = int32(len(a.sets))
			interned[string(key)] = id
			a.sets = append(a.sets, set)
		}
		if n := len(t.sets); n > 0 && t.sets[n-1] == id {
			continue // same set as the piece before: one range
		}
		t.starts = append(t.starts, p)
		t.sets = append(t.sets, id)
	}
	return t
}
