package guard

import (
	"net/netip"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func prefixes(t testing.TB, ss ...string) []netip.Prefix {
	t.Helper()
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func headers(kv ...string) func(string) string {
	return func(name string) string {
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i] == name {
				return kv[i+1]
			}
		}
		return ""
	}
}

func testACL(t testing.TB) *ACL {
	t.Helper()
	acl, err := NewACL([]Trunk{
		{Name: "wide", CIDRs: prefixes(t, "10.0.0.0/8")},
		{Name: "narrow", CIDRs: prefixes(t, "10.1.0.0/16", "2001:db8:1::/48")},
		{Name: "by-host", CIDRs: prefixes(t, "192.0.2.0/24"), RequestURIHost: "PBX.example.com"},
		{Name: "by-header", CIDRs: prefixes(t, "192.0.2.0/25"), Header: "X-Trunk", HeaderValue: "acme"},
		{Name: "v6", CIDRs: prefixes(t, "2001:db8::/32"), ExemptFromRateLimits: true},
		{Name: "host", CIDRs: prefixes(t, "198.51.100.7/32", "::ffff:203.0.113.0/120")},
	}, []netip.Addr{addr("10.9.9.9"), addr("172.16.0.5"), addr("2001:db8:ffff::5")})
	require.NoError(t, err)
	return acl
}

func TestACLCheck(t *testing.T) {
	acl := testACL(t)
	tests := []struct {
		name    string
		src     string
		ruri    string
		hdr     func(string) string
		trunk   string
		allowed bool
	}{
		{"outside every trunk", "203.0.114.1", "x", nil, "", false},
		{"v4 wide", "10.2.3.4", "x", nil, "wide", true},
		{"overlap picks the most specific", "10.1.2.3", "x", nil, "narrow", true},
		{"first and last of a /16", "10.1.0.0", "", nil, "narrow", true},
		{"just past the /16", "10.2.0.0", "", nil, "wide", true},
		{"last address of a /8", "10.255.255.255", "", nil, "wide", true},
		{"just past the /8", "11.0.0.0", "", nil, "", false},
		{"v4-mapped source", "::ffff:10.1.2.3", "", nil, "narrow", true},
		{"v4-mapped prefix in config", "203.0.113.200", "", nil, "host", true},
		{"host /32", "198.51.100.7", "", nil, "host", true},
		{"host /32 neighbour", "198.51.100.8", "", nil, "", false},
		{"v6 specific", "2001:db8:1::1", "", nil, "narrow", true},
		{"v6 wide exempt", "2001:db8:2::1", "", nil, "v6", true},
		{"v6 outside", "2001:db9::1", "", nil, "", false},
		{"::/0 is not v4", "0.0.0.1", "", nil, "", false},
		{"R-URI host matches, case-insensitive", "192.0.2.200", "pbx.EXAMPLE.com", nil, "by-host", true},
		{"R-URI host differs", "192.0.2.200", "other.example.com", nil, "", false},
		{"header beats host when more specific", "192.0.2.10", "x", headers("X-Trunk", "acme"), "by-header", true},
		{"header wrong, host right: the wider trunk", "192.0.2.10", "pbx.example.com", headers("X-Trunk", "evil"), "by-host", true},
		{"neither condition", "192.0.2.10", "x", headers("X-Trunk", "evil"), "", false},
		{"header func nil", "192.0.2.10", "x", nil, "", false},
		{"node always allowed", "172.16.0.5", "anything", nil, "", true},
		{"node inside a trunk", "10.9.9.9", "", nil, "", true},
		{"v6 node", "2001:db8:ffff::5", "", nil, "", true},
		{"invalid address", "", "", nil, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var src netip.Addr
			if tt.src != "" {
				src = addr(tt.src)
			}
			trunk, ok := acl.Check(src, tt.ruri, tt.hdr)
			assert.Equal(t, tt.allowed, ok)
			assert.Equal(t, tt.trunk, trunk)
		})
	}
}

func TestACLSource(t *testing.T) {
	acl := testACL(t)
	tests := []struct {
		src  string
		want Source
	}{
		{"203.0.114.1", Source{}},
		{"10.2.3.4", Source{Admitted: true}},
		{"192.0.2.200", Source{Admitted: true, Conditional: true}},
		{"192.0.2.10", Source{Admitted: true, Conditional: true}},
		{"2001:db8:2::1", Source{Admitted: true, Exempt: true}},
		{"2001:db8:1::1", Source{Admitted: true, Exempt: true}}, // narrow, inside exempt v6
		{"172.16.0.5", Source{Admitted: true, Node: true, Exempt: true}},
		{"::ffff:172.16.0.5", Source{Admitted: true, Node: true, Exempt: true}},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			assert.Equal(t, tt.want, acl.Source(addr(tt.src)))
		})
	}
	assert.Equal(t, []string{"narrow", "wide"}, acl.trunkNames(addr("10.1.0.1")))
	assert.Equal(t, []string{"by-header", "by-host"}, acl.trunkNames(addr("192.0.2.1")))
}

func TestACLOpen(t *testing.T) {
	acl, err := NewACL(nil, []netip.Addr{addr("10.0.0.1")})
	require.NoError(t, err)
	assert.True(t, acl.Open())
	trunk, ok := acl.Check(addr("198.51.100.1"), "", nil)
	assert.True(t, ok)
	assert.Empty(t, trunk)
	assert.Equal(t, Source{Admitted: true}, acl.Source(addr("198.51.100.1")))
	assert.Equal(t, Source{Admitted: true, Node: true, Exempt: true}, acl.Source(addr("10.0.0.1")))

	var nilACL *ACL
	assert.True(t, nilACL.Open())
	_, ok = nilACL.Check(addr("198.51.100.1"), "", nil)
	assert.True(t, ok)
}

func TestACLErrors(t *testing.T) {
	p := prefixes(t, "10.0.0.0/8")
	tests := []struct {
		name   string
		trunks []Trunk
		want   string
	}{
		{"no name", []Trunk{{CIDRs: p}}, "has no name"},
		{"duplicate", []Trunk{{Name: "a", CIDRs: p}, {Name: "a", CIDRs: p}}, `duplicate trunk name "a"`},
		{"no sources", []Trunk{{Name: "a"}}, `trunk "a" has no sources`},
		{"value without header", []Trunk{{Name: "a", CIDRs: p, HeaderValue: "x"}}, "header value but no header name"},
		{"invalid prefix", []Trunk{{Name: "a", CIDRs: []netip.Prefix{{}}}}, "invalid prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewACL(tt.trunks, nil)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tt.want)
		})
	}
}

func TestACLCopiesConfig(t *testing.T) {
	trunks := []Trunk{{Name: "a", CIDRs: prefixes(t, "10.0.0.0/8")}}
	acl, err := NewACL(trunks, nil)
	require.NoError(t, err)
	trunks[0].Name = "changed"
	trunks[0].CIDRs[0] = netip.MustParsePrefix("11.0.0.0/8")
	name, ok := acl.Check(addr("10.0.0.1"), "", nil)
	assert.True(t, ok)
	assert.Equal(t, "a", name)
}

func TestACLNoAllocs(t *testing.T) {
	acl := testACL(t)
	hdr := headers("X-Trunk", "acme")
	src := addr("192.0.2.10")
	allocs := testing.AllocsPerRun(100, func() {
		_, _ = acl.Check(src, "pbx.example.com", hdr)
		_ = acl.Source(src)
	})
	assert.Zero(t, allocs)
}

// naiveCheck is the reference: scan every trunk's every prefix.
func naiveCheck(trunks []Trunk, nodes []netip.Addr, src netip.Addr, ruri string, hdr func(string) string) (string, bool) {
	src = src.Unmap()
	for _, n := range nodes {
		if n.Unmap() == src {
			return "", true
		}
	}
	if len(trunks) == 0 {
		return "", true
	}
	best, bestBits := -1, -1
	for i, t := range trunks {
		for _, p := range t.CIDRs {
			if p.Addr().Is4In6() && p.Bits() >= 96 {
				p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
			}
			if !p.Contains(src) {
				continue
			}
			if t.RequestURIHost != "" && !equalFoldASCII(ruri, t.RequestURIHost) {
				continue
			}
			if t.Header != "" && (hdr == nil || hdr(t.Header) != t.HeaderValue) {
				continue
			}
			if p.Bits() > bestBits || (p.Bits() == bestBits && i < best) {
				best, bestBits = i, p.Bits()
			}
		}
	}
	if best < 0 {
		return "", false
	}
	return trunks[best].Name, true
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}
