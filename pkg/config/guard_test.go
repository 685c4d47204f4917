package config

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestLoadBytesGuardErrors(t *testing.T) {
	isolateEnv(t)
	trunk := func(fields string) string {
		return node + "trunks: [{name: a, sources: [\"192.0.2.0/24\"]" + fields + "}]\n"
	}
	tests := []struct {
		name string
		yaml string
		want string
	}{
		// trunks
		{"trunk name missing", node + `trunks: [{sources: ["192.0.2.0/24"]}]`, "trunks[0].name: required"},
		{"trunk name chars", node + `trunks: [{name: "carrier a", sources: ["192.0.2.0/24"]}]`, `trunks[0].name: "carrier a" must be 1-64 characters`},
		{"duplicate trunk names", node + `trunks: [{name: a, sources: ["192.0.2.0/24"]}, {name: a, sources: ["198.51.100.0/24"]}]`,
			`trunks[1].name: duplicate name "a" (also trunks[0])`},
		{"no sources", node + `trunks: [{name: a}]`, "trunks[0].sources: at least one CIDR or address is required"},
		{"bad CIDR", node + `trunks: [{name: a, sources: ["192.0.2.0/33"]}]`, `trunks[0].sources[0]: "192.0.2.0/33" is not a CIDR such as 192.0.2.0/24`},
		{"not an address", node + `trunks: [{name: a, sources: ["192.0.2.0/24", "carrier.example"]}]`, `trunks[0].sources[1]: "carrier.example" is not an IP address or CIDR`},
		{"host bits", node + `trunks: [{name: a, sources: ["10.0.0.1/8"]}]`, `trunks[0].sources[0]: "10.0.0.1/8" has host bits set (did you mean 10.0.0.0/8?)`},
		{"IPv6 host bits", node + `trunks: [{name: a, sources: ["2001:db8::1/32"]}]`, `(did you mean 2001:db8::/32?)`},
		{"zone", node + `trunks: [{name: a, sources: ["fe80::1%eth0"]}]`, `trunks[0].sources[0]: "fe80::1%eth0" is not an IP address or CIDR`},
		{"duplicate source", node + `trunks: [{name: a, sources: ["192.0.2.7", "192.0.2.7/32"]}]`, "trunks[0].sources[1]: duplicate of trunks[0].sources[0]"},
		{"bad R-URI host", trunk(`, request_uri_host: "pbx example"`), `trunks[0].request_uri_host: "pbx example" is not a host name or IP address`},
		{"header value without name", trunk(`, header: {value: x}`), "trunks[0].header.name: required with header.value"},
		{"header name without value", trunk(`, header: {name: X-Key}`), "trunks[0].header.value: required with header.name"},
		{"header name not a token", trunk(`, header: {name: "X Key", value: v}`), `trunks[0].header.name: "X Key" is not a SIP header name`},
		{"header value with CRLF", trunk(`, header: {name: X-Key, value: "a\r\nVia: x"}`), "trunks[0].header.value: must not contain CR or LF"},
		{"unknown trunk key", trunk(`, sorces: ["x"]`), `unknown key "trunks[0].sorces"`},
		{"trunks not a list", node + "trunks: {name: a}", "trunks: want a list, got a map"},

		// security
		{"untrusted", node + "security: {untrusted: ignore}", `security.untrusted: unknown action "ignore" (want drop or reject)`},

		// limits
		{"action", node + "limits: {action: reply_403}", `limits.action: unknown action "reply_403" (want reply_503 or drop)`},
		{"negative rate", node + "limits: {per_source: {invite_rate: -1}}", "limits.per_source.invite_rate: must be a rate in [0, 1e9] per second, got -1"},
		{"burst 0 with a rate", node + "limits: {per_source: {request_rate: 100, request_burst: 0}}", "limits.per_source.request_burst: must be >= 1 when limits.per_source.request_rate is set, got 0"},
		{"negative burst", node + "limits: {global: {invite_burst: -1}}", "limits.global.invite_burst: must be >= 0, got -1"},
		{"global burst 0 with a rate", node + "limits: {global: {invite_rate: 50, invite_burst: 0}}", "limits.global.invite_burst: must be >= 1 when limits.global.invite_rate is set"},
		{"rate not a number", node + "limits: {per_source: {invite_rate: fast}}", `limits.per_source.invite_rate: want a number, got "fast"`},
		{"max sources 0", node + "limits: {per_source: {max_sources: 0}}", "limits.per_source.max_sources: must be 1-10000000, got 0"},
		{"max sources huge", node + "limits: {per_source: {max_sources: 100000000}}", "limits.per_source.max_sources: must be 1-10000000"},
		{"max bytes small", node + "limits: {message: {max_bytes: 100}}", "limits.message.max_bytes: must be 0 (off) or 1024-65535 (sipgo refuses larger messages), got 100"},
		{"max bytes over sipgo", node + "limits: {message: {max_bytes: 70000}}", "limits.message.max_bytes: must be 0 (off) or 1024-65535"},
		{"max headers small", node + "limits: {message: {max_headers: 5}}", "limits.message.max_headers: must be 0 (off) or at least 10"},
		{"max headers negative", node + "limits: {message: {max_headers: -5}}", "limits.message.max_headers: must be >= 0, got -5"},
		{"max header bytes small", node + "limits: {message: {max_header_bytes: 100}}", "limits.message.max_header_bytes: must be 0 (off) or at least 256"},
		{"max vias negative", node + "limits: {message: {max_vias: -1}}", "limits.message.max_vias: must be >= 0, got -1"},
		{"tcp per source over total", node + "limits: {tcp: {max_connections: 10, max_per_source: 11}}", "limits.tcp.max_per_source: must not exceed limits.tcp.max_connections (10), got 11"},
		{"tcp negative", node + "limits: {tcp: {max_connections: -1}}", "limits.tcp.max_connections: must be >= 0, got -1"},
		{"idle timeout", node + "limits: {tcp: {idle_timeout: -1s}}", "limits.tcp.idle_timeout: must be >= 0 (0: off), got -1s"},
		{"read timeout", node + "limits: {tcp: {read_timeout: 10}}", "limits.tcp.read_timeout: want a duration such as 1s, got 10"},
		{"overload latency tiny", node + "limits: {overload_latency: 100us}", "limits.overload_latency: must be 0 (off) or 1ms-5s, got 100µs"},
		{"overload latency huge", node + "limits: {overload_latency: 1m}", "limits.overload_latency: must be 0 (off) or 1ms-5s, got 1m0s"},
		{"overload latency negative", node + "limits: {overload_latency: -1ms}", "limits.overload_latency: must be 0 (off) or 1ms-5s, got -1ms"},

		// sip.tls.reload_check
		{"tls reload check", node + "sip: {tls: {reload_check: -1s}}", "sip.tls.reload_check: must be >= 0 (0: never reload), got -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := LoadBytes([]byte(tt.yaml))
			require.Error(t, err)
			assert.Nil(t, c)
			assert.Contains(t, err.Error(), tt.want)
			assert.Len(t, strings.Split(err.Error(), "\n"), 1, "problems reported:\n%v", err)
		})
	}
}

func TestLoadBytesGuard(t *testing.T) {
	isolateEnv(t)
	c, err := LoadBytes([]byte(node + `
trunks:
  - name: carrier-a
    sources: ["192.0.2.0/24", "198.51.100.7", "2001:db8::/32", " 203.0.113.0/25 "]
    exempt_from_rate_limits: true
  - name: shared
    sources: ["192.0.2.0/24"]
    request_uri_host: "[2001:db8::5]"
    header: {name: X-Carrier-Key, value: "k 1"}
security: {untrusted: reject}
sip: {tls: {reload_check: 0s}}
limits:
  action: drop
  per_source: {invite_rate: 2.5, invite_burst: 3, request_rate: 0, request_burst: 0}
  global: {invite_rate: 400}
  message: {max_bytes: 0, max_vias: 0}
  tcp: {idle_timeout: 0s, max_connections: 0}
  overload_latency: 0s
`))
	require.NoError(t, err)
	assert.Equal(t, []Trunk{
		{Name: "carrier-a", Sources: []string{"192.0.2.0/24", "198.51.100.7", "2001:db8::/32", " 203.0.113.0/25 "}, ExemptFromRateLimits: true},
		{Name: "shared", Sources: []string{"192.0.2.0/24"}, RequestURIHost: "[2001:db8::5]", Header: TrunkHeader{Name: "X-Carrier-Key", Value: "k 1"}},
	}, c.Trunks)
	assert.Equal(t, "reject", c.Security.Untrusted)
	assert.Equal(t, Limits{
		Action:    "drop",
		PerSource: PerSourceLimits{InviteRate: 2.5, InviteBurst: 3, RequestBurst: 0, MaxSources: 100000},
		Global:    GlobalLimits{InviteRate: 400, InviteBurst: 100},
		Message:   MessageLimits{MaxHeaders: 100, MaxHeaderBytes: 4096},
		TCP:       TCPLimits{MaxPerSource: 100, ReadTimeout: 10 * time.Second},
	}, c.Limits, "explicit zeros are kept: a burst of 0 with no rate, limits turned off")
	assert.Zero(t, c.SIP.TLS.ReloadCheck)

	p, err := c.Trunks[0].Prefixes()
	require.NoError(t, err)
	assert.Equal(t, []netip.Prefix{
		netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.7/32"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("203.0.113.0/25"),
	}, p)
	_, err = Trunk{Sources: []string{"nope"}}.Prefixes()
	assert.Error(t, err)
	assert.Empty(t, c.Warnings())
}

func TestLoadBytesGuardEnv(t *testing.T) {
	isolateEnv(t)
	t.Setenv("SIPBALANCER_TRUNKS", `[{"name":"env","sources":["192.0.2.0/24"],"header":{"name":"X-K","value":"v"}}]`)
	t.Setenv("SIPBALANCER_LIMITS_PER_SOURCE_INVITE_RATE", "12.5")
	t.Setenv("SIPBALANCER_LIMITS_GLOBAL_INVITE_RATE", "300")
	t.Setenv("SIPBALANCER_SECURITY_UNTRUSTED", "reject")
	t.Setenv("SIPBALANCER_LIMITS_TCP_IDLE_TIMEOUT", "90s")
	c, err := LoadBytes([]byte(node))
	require.NoError(t, err)
	assert.Equal(t, []Trunk{{Name: "env", Sources: []string{"192.0.2.0/24"}, Header: TrunkHeader{Name: "X-K", Value: "v"}}}, c.Trunks)
	assert.InDelta(t, 12.5, c.Limits.PerSource.InviteRate, 0)
	assert.InDelta(t, 300, c.Limits.Global.InviteRate, 0)
	assert.Equal(t, "reject", c.Security.Untrusted)
	assert.Equal(t, 90*time.Second, c.Limits.TCP.IdleTimeout)

	t.Setenv("SIPBALANCER_HEALTH_CPU_IDLE_MIN", "7.5")
	c, err = LoadBytes([]byte(node))
	require.NoError(t, err)
	assert.InDelta(t, 7.5, c.Health.CPU.IdleMin, 0, "float keys from the environment")

	t.Setenv("SIPBALANCER_LIMITS_GLOBAL_INVITE_RATE", "NaN")
	_, err = LoadBytes([]byte(node))
	require.ErrorContains(t, err, `limits.global.invite_rate: want a number, got "NaN"`)
}

func TestWarnings(t *testing.T) {
	isolateEnv(t)
	c, err := LoadBytes([]byte(node))
	require.NoError(t, err)
	w := c.Warnings()
	require.Len(t, w, 1)
	assert.Contains(t, w[0], "trunks: none configured, so every source")
}
