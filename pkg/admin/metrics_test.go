package admin_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/internal/redistest"
	"github.com/sipbalancer/sipbalancer/pkg/metrics"
)

// scrape reads /metrics over HTTP and parses it as Prometheus does.
func (e *env) scrape() map[string]*dto.MetricFamily {
	e.t.Helper()
	code, _, body := e.do(http.MethodGet, "/metrics", "", nil)
	require.Equal(e.t, http.StatusOK, code)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	require.NoError(e.t, err)
	return fams
}

// value sums the family's samples whose labels include want.
func value(fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	f := fams[name]
	if f == nil {
		return 0
	}
	total := 0.0
next:
	for _, m := range f.GetMetric() {
		for k, v := range want {
			found := false
			for _, lp := range m.GetLabel() {
				if lp.GetName() == k && lp.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			total += m.GetCounter().GetValue()
		case m.Gauge != nil:
			total += m.GetGauge().GetValue()
		case m.Histogram != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return total
}

// TestMetricsTellTheTruth: after a burst of calls the scraped counters
// match what the nodes themselves recorded.
func TestMetricsTellTheTruth(t *testing.T) {
	e := startEnv(t, envOpts{nodes: 3})
	const calls = 1000
	perNode := e.calls(calls)
	require.Len(t, perNode, 3)

	fams := e.scrape()
	for id, n := range perNode {
		require.Equal(t, float64(n), value(fams, "sipbalancer_dispatches_total", map[string]string{"node": id}), "node %s", id)
	}
	require.Equal(t, float64(calls), value(fams, "sipbalancer_dispatches_total", nil))
	require.Equal(t, float64(calls), value(fams, "sipbalancer_calls_total", map[string]string{"outcome": "answered"}))
	require.Equal(t, float64(calls), value(fams, "sipbalancer_calls_total", nil))
	require.Equal(t, float64(calls), value(fams, "sipbalancer_call_setup_seconds", nil), "one setup time per call")
	require.Zero(t, value(fams, "sipbalancer_dispatch_all_unavailable_total", nil))
	require.Zero(t, value(fams, "sipbalancer_failovers_total", nil))
	// Each call: INVITE, re-INVITE and BYE from the carrier (UDP
	// retransmissions may add to these, never remove).
	invites := value(fams, "sipbalancer_sip_requests_total", map[string]string{"method": "INVITE", "direction": "from_carrier"})
	require.GreaterOrEqual(t, invites, float64(2*calls))
	byes := value(fams, "sipbalancer_sip_requests_total", map[string]string{"method": "BYE", "direction": "from_carrier"})
	require.GreaterOrEqual(t, byes, float64(calls))
	ok := value(fams, "sipbalancer_sip_responses_total", map[string]string{"method": "INVITE", "class": "2xx", "direction": "from_carrier"})
	require.GreaterOrEqual(t, ok, float64(2*calls))
	for id := range perNode {
		require.Equal(t, 1.0, value(fams, "sipbalancer_node_state", map[string]string{"node": id, "state": "up"}))
	}
}

// TestReadyzDegradedWithoutRedis: with Redis gone the instance stays
// ready (calls flow), and the detail says the store is degraded.
func TestReadyzDegradedWithoutRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("starts redis-server")
	}
	rs := redistest.Start(t)
	e := startEnv(t, envOpts{nodes: 1, session: "  store: redis\n  redis:\n    addrs: [\"" + rs.Addr() + "\"]\n"})
	type ready struct {
		Status   string   `json:"status"`
		Ready    bool     `json:"ready"`
		Problems []string `json:"problems"`
		Store    struct {
			Kind    string `json:"kind"`
			Healthy bool   `json:"healthy"`
			Redis   struct {
				Mode      string `json:"mode"`
				Connected bool   `json:"connected"`
				LastError string `json:"last_error"`
			} `json:"redis"`
		} `json:"store"`
	}
	var r ready
	require.Eventually(t, func() bool {
		return e.getJSON(http.MethodGet, "/readyz", "", nil, &r) == http.StatusOK && r.Status == "ready"
	}, 10*time.Second, 20*time.Millisecond, "ready with Redis up: %+v", r)
	require.Equal(t, "redis", r.Store.Kind)
	require.Equal(t, "standalone", r.Store.Redis.Mode)

	rs.Stop()
	// The store notices at its next round trip (an idle writer pings
	// every second).
	require.Eventually(t, func() bool {
		r = ready{}
		return e.getJSON(http.MethodGet, "/readyz", "", nil, &r) == http.StatusOK && r.Status == "degraded"
	}, 20*time.Second, 20*time.Millisecond, "degraded with Redis down: %+v", r)
	require.True(t, r.Ready)
	require.False(t, r.Store.Healthy)
	require.False(t, r.Store.Redis.Connected)
	require.NotEmpty(t, r.Store.Redis.LastError)
	require.Len(t, r.Problems, 1)
	require.Contains(t, r.Problems[0], "affinity store unhealthy")
	// Calls still flow.
	require.Len(t, e.calls(4), 1)

	fams := e.scrape()
	require.Equal(t, 0.0, value(fams, "sipbalancer_store_healthy", map[string]string{"store": "redis"}))
}

// fullRegistry registers every series pkg/metrics can export and makes
// each appear: a node view with every optional figure, both kinds of store,
// and one event of each call-path kind. Histograms appear under their base
// name.
func fullRegistry(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	gather := func(reg *prometheus.Registry) {
		fams, err := reg.Gather()
		require.NoError(t, err)
		for _, f := range fams {
			names[f.GetName()] = true
		}
	}
	reg := prometheus.NewRegistry()
	rec := metrics.NewRecorder(reg)
	rec.Request(sip.INVITE, metrics.FromCarrier)
	rec.Response(sip.INVITE, 200, metrics.FromCarrier)
	rec.Dispatched("fs1")
	rec.FailedOver("fs1", "timeout")
	rec.AllUnavailable()
	rec.Rejected("loop")
	rec.CallSetup(time.Millisecond)
	rec.CallOutcome(metrics.OutcomeAnswered)
	rec.StateChange("fs1", "down", "probe_failed")
	metrics.RegisterNodes(reg, func() []metrics.NodeView {
		return []metrics.NodeView{{ID: "fs1", State: "up", HasLoad: true, HasProbe: true, ESL: true, ESLConnected: true,
			MediaProbes: map[string]uint64{"ok": 1}, HasMedia: true, MediaReceived: 50, MediaRTT: time.Millisecond}}
	})
	metrics.RegisterStore(reg, func() metrics.StoreView {
		return metrics.StoreView{Kind: "redis", LookupBounds: []time.Duration{time.Millisecond}, LookupCounts: []uint64{1}, LookupCount: 1}
	})
	metrics.RegisterProxy(reg, "test", func() metrics.ProxyView { return metrics.ProxyView{} })
	gather(reg)
	mem := prometheus.NewRegistry()
	metrics.RegisterStore(mem, func() metrics.StoreView { return metrics.StoreView{Kind: "memory"} })
	gather(mem)
	return names
}

// readmeSeries returns the series names listed in README.md's Metrics
// section: every `sipbalancer_...` in backquotes.
func readmeSeries(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	text := string(data)
	start := strings.Index(text, "\n## Metrics\n")
	require.GreaterOrEqual(t, start, 0, "README has a ## Metrics section")
	section := text[start+len("\n## Metrics\n"):]
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	seen := map[string]bool{}
	var out []string
	for _, m := range regexp.MustCompile("`(sipbalancer_[a-z0-9_]+)`").FindAllStringSubmatch(section, -1) {
		if !seen[m[1]] {
			seen[m[1]] = true
			out = append(out, m[1])
		}
	}
	return out
}

// TestReadmeListsEverySeries: README's Metrics section lists exactly the
// sipbalancer_* families the code exports, and the running balancer's
// registry exports nothing the README does not list.
func TestReadmeListsEverySeries(t *testing.T) {
	listed := readmeSeries(t)
	require.NotEmpty(t, listed)

	exported := fullRegistry(t)
	var want []string
	for name := range exported {
		if strings.HasPrefix(name, "sipbalancer_") {
			want = append(want, name)
		}
	}
	sort.Strings(want)
	got := slices.Clone(listed)
	sort.Strings(got)
	require.Equal(t, want, got, "README ## Metrics vs the registry")

	// The running balancer (a node view exists, memory store) exports a
	// subset of the list: nothing is wired outside pkg/metrics unlisted.
	e := startEnv(t, envOpts{nodes: 1})
	fams, err := e.app.Registry().Gather()
	require.NoError(t, err)
	for _, f := range fams {
		if strings.HasPrefix(f.GetName(), "sipbalancer_") {
			require.Contains(t, listed, f.GetName(), "exported but not in README")
		}
	}
}

// TestDashboardUsesOnlyExportedMetrics: every metric name in every PromQL
// expression of the Grafana dashboard is one the registry exports.
func TestDashboardUsesOnlyExportedMetrics(t *testing.T) {
	data, err := os.ReadFile("../../configs/grafana/sipbalancer.json")
	require.NoError(t, err)
	var dash map[string]any
	require.NoError(t, json.Unmarshal(data, &dash))
	require.NotEmpty(t, dash["title"])
	require.NotEmpty(t, dash["uid"])
	require.GreaterOrEqual(t, dash["schemaVersion"], 36.0)

	exported := fullRegistry(t)
	// The process and Go collectors the balancer registers too.
	e := startEnv(t, envOpts{nodes: 1})
	fams, err := e.app.Registry().Gather()
	require.NoError(t, err)
	for _, f := range fams {
		exported[f.GetName()] = true
	}

	exprs := dashboardExprs(dash)
	require.Greater(t, len(exprs), 20, "the dashboard has its queries")
	used := map[string]bool{}
	for _, expr := range exprs {
		names := promqlMetricNames(expr)
		require.NotEmpty(t, names, "no metric in %q", expr)
		for _, n := range names {
			used[n] = true
			require.True(t, exported[n], "dashboard query %q uses %s, which the code does not export", expr, n)
		}
	}
	// The operator's essentials are on it.
	for _, n := range []string{
		"sipbalancer_calls_total", "sipbalancer_call_setup_seconds", "sipbalancer_node_state",
		"sipbalancer_node_sessions", "sipbalancer_node_max_sessions", "sipbalancer_node_idle_cpu_ratio",
		"sipbalancer_node_active_calls", "sipbalancer_failovers_total", "sipbalancer_sip_rejected_total",
		"sipbalancer_dispatch_all_unavailable_total", "sipbalancer_store_healthy", "sipbalancer_store_queue_depth",
		"sipbalancer_store_dropped_total", "sipbalancer_store_lookup_seconds", "sipbalancer_sip_requests_total",
		"sipbalancer_sip_responses_total",
	} {
		require.True(t, used[n], "the dashboard shows %s", n)
	}

	// Every panel and query uses the datasource variable.
	var check func(panels []any)
	check = func(panels []any) {
		for _, p := range panels {
			pm := p.(map[string]any)
			if pm["type"] != "row" {
				ds, _ := pm["datasource"].(map[string]any)
				require.Equal(t, "${datasource}", ds["uid"], "panel %v", pm["title"])
			}
			if sub, ok := pm["panels"].([]any); ok {
				check(sub)
			}
		}
	}
	check(dash["panels"].([]any))
}

// dashboardExprs collects the PromQL of every panel target (rows' panels
// included) and of every query variable.
func dashboardExprs(dash map[string]any) []string {
	var out []string
	var walk func(panels []any)
	walk = func(panels []any) {
		for _, p := range panels {
			pm := p.(map[string]any)
			targets, _ := pm["targets"].([]any)
			for _, tg := range targets {
				if expr, _ := tg.(map[string]any)["expr"].(string); expr != "" {
					out = append(out, expr)
				}
			}
			if sub, ok := pm["panels"].([]any); ok {
				walk(sub)
			}
		}
	}
	walk(dash["panels"].([]any))
	tmpl, _ := dash["templating"].(map[string]any)
	list, _ := tmpl["list"].([]any)
	for _, v := range list {
		vm := v.(map[string]any)
		if vm["type"] != "query" {
			continue
		}
		q := ""
		switch x := vm["query"].(type) {
		case string:
			q = x
		case map[string]any:
			q, _ = x["query"].(string)
		}
		// label_values(selector, label): the selector is the PromQL.
		if inner, ok := strings.CutPrefix(q, "label_values("); ok {
			if i := strings.LastIndex(inner, ","); i >= 0 {
				q = inner[:i]
			}
		}
		if q != "" {
			out = append(out, q)
		}
	}
	return out
}

var (
	promStrings  = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	promMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	promRanges   = regexp.MustCompile(`\[[^\[\]]*\]`)
	promGrouping = regexp.MustCompile(`(?i)\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promVars     = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	promKeywords = map[string]bool{
		"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
		"bool": true, "and": true, "or": true, "unless": true, "offset": true, "inf": true, "nan": true,
	}
)

// promqlMetricNames returns the metric names an expression selects, with
// the _bucket, _sum and _count suffixes of histograms removed: identifiers
// outside strings, label matchers, ranges and grouping clauses that are
// not keywords, numbers or function calls.
func promqlMetricNames(expr string) []string {
	s := promStrings.ReplaceAllString(expr, " ")
	s = promVars.ReplaceAllString(s, " ")
	for {
		n := promMatchers.ReplaceAllString(s, " ")
		if n == s {
			break
		}
		s = n
	}
	s = promRanges.ReplaceAllString(s, " ")
	s = promGrouping.ReplaceAllString(s, " ")
	var out []string
	for _, loc := range promIdent.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		if loc[0] > 0 && (s[loc[0]-1] >= '0' && s[loc[0]-1] <= '9' || s[loc[0]-1] == '.') {
			continue // part of a number such as 1e3
		}
		if promKeywords[strings.ToLower(id)] {
			continue
		}
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if strings.HasPrefix(rest, "(") {
			continue // a function or aggregation
		}
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(id, suf); ok && strings.HasPrefix(id, "sipbalancer_") {
				id = base
				break
			}
		}
		out = append(out, id)
	}
	return out
}

func TestPromqlMetricNames(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`sum(rate(sipbalancer_calls_total{instance=~"$instance"}[$__rate_interval]))`, []string{"sipbalancer_calls_total"}},
		{`histogram_quantile(0.99, sum by (le) (rate(sipbalancer_call_setup_seconds_bucket[5m])))`, []string{"sipbalancer_call_setup_seconds"}},
		{`sum by (node) (sipbalancer_node_sessions) / (sipbalancer_node_max_sessions > 0)`, []string{"sipbalancer_node_sessions", "sipbalancer_node_max_sessions"}},
		{`a{x="b(c)"} + ignoring(state) b offset 5m and on(node) c`, []string{"a", "b", "c"}},
		{`max without (state) (x) * 1e3`, []string{"x"}},
	}
	for _, tc := range tests {
		require.Equal(t, tc.want, promqlMetricNames(tc.expr), tc.expr)
	}
}
