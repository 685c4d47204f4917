package guard

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

// benchACL builds n trunks of 4 prefixes each (2 IPv4, 2 IPv6), nested and
// overlapping, a quarter of them with an R-URI condition.
func benchACL(b *testing.B, n int) *ACL {
	b.Helper()
	trunks := make([]Trunk, n)
	for i := range trunks {
		t := Trunk{Name: fmt.Sprintf("t%d", i), CIDRs: []netip.Prefix{
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), byte(i), 0}), 24),
			netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 8), 0, 0}), 16),
			netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8), byte(i)}), 48),
			netip.PrefixFrom(netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, byte(i >> 8)}), 40),
		}}
		if i%4 == 0 {
			t.RequestURIHost = "pbx.example.com"
		}
		trunks[i] = t
	}
	acl, err := NewACL(trunks, []netip.Addr{netip.MustParseAddr("10.200.0.1")})
	if err != nil {
		b.Fatal(err)
	}
	return acl
}

func BenchmarkACLCheck(b *testing.B) {
	for _, n := range []int{1, 10, 100, 1000} {
		acl := benchACL(b, n)
		srcs := []netip.Addr{
			netip.AddrFrom4([4]byte{10, 0, byte(n / 2), 7}),                           // inside
			netip.AddrFrom4([4]byte{172, 16, 0, 1}),                                   // outside
			netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, byte(n / 3), 15: 1}), // IPv6
		}
		b.Run(fmt.Sprintf("trunks=%d/prefixes=%d", n, 4*n), func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				i := 0
				for pb.Next() {
					acl.Check(srcs[i%len(srcs)], "pbx.example.com", nil)
					i++
				}
			})
		})
	}
}

// BenchmarkLimiterAllow: every goroutine cycles through its own range of
// sources, a million in all, against a table of 100,000: most calls evict.
func BenchmarkLimiterAllow(b *testing.B) {
	cfg := LimiterConfig{InviteRate: 50, InviteBurst: 100, RequestRate: 500, RequestBurst: 1000,
		GlobalInviteRate: 1e9, GlobalInviteBurst: 1e9, MaxSources: 100_000}
	for _, sources := range []int{1_000, 1_000_000} {
		b.Run(fmt.Sprintf("sources=%d", sources), func(b *testing.B) {
			l, err := NewLimiter(cfg)
			if err != nil {
				b.Fatal(err)
			}
			var next atomic.Uint32
			now := time.Now()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				base := next.Add(1) << 24
				i := uint32(0)
				for pb.Next() {
					v := base + i%uint32(sources)
					src := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
					l.Allow(src, i%4 == 0, now)
					i++
				}
			})
		})
	}
}

func BenchmarkInspectDatagram(b *testing.B) {
	data := crlf(invite)
	lim := MessageLimits{MaxBytes: 16384, MaxHeaders: 100, MaxHeaderBytes: 4096, MaxVias: 20}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		InspectDatagram(data, lim)
	}
}

func BenchmarkStreamScanner(b *testing.B) {
	data := crlf(invite)
	s := newStreamScanner(MessageLimits{MaxBytes: 16384, MaxHeaders: 100, MaxHeaderBytes: 4096, MaxVias: 20})
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if s.feed(data) != ReasonNone {
			b.Fatal("refused")
		}
	}
}

// BenchmarkReadFilter is the whole UDP read filter on a typical INVITE from
// a trunk: limits, ACL, rate buckets.
func BenchmarkReadFilter(b *testing.B) {
	g, err := New(Config{
		Trunks:     benchACL(b, 100).trunks,
		RateAction: Drop,
		Limits: LimiterConfig{InviteRate: 1e9, InviteBurst: 1e9, RequestRate: 1e9, RequestBurst: 1e9,
			GlobalInviteRate: 1e9, GlobalInviteBurst: 1e9, MaxSources: 100_000},
		Message: MessageLimits{MaxBytes: 16384, MaxHeaders: 100, MaxHeaderBytes: 4096, MaxVias: 20},
	})
	if err != nil {
		b.Fatal(err)
	}
	filter := g.ReadFilter()
	data := crlf(invite)
	src := udpFrom("10.0.5.7")
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if filter("UDP", src, data) == nil {
				b.Fatal("dropped")
			}
		}
	})
}
