package admin_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/admin"
	"github.com/sipbalancer/sipbalancer/pkg/callgen"
	"github.com/sipbalancer/sipbalancer/pkg/session"
)

type errorJSON struct {
	Error  string   `json:"error"`
	Errors []string `json:"errors"`
}

func TestHealthzAndMetrics(t *testing.T) {
	e := startEnv(t, envOpts{nodes: 1})
	code, h, body := e.do(http.MethodGet, "/healthz", "", nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "ok\n", string(body))
	require.Contains(t, h.Get("Content-Type"), "text/plain")

	code, h, body = e.do(http.MethodGet, "/metrics", "", nil)
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, h.Get("Content-Type"), "text/plain")
	for _, series := range []string{
		`sipbalancer_build_info{version="dev"} 1`,
		`sipbalancer_node_state{node="fs1",state="up"}`,
		`sipbalancer_sip_listeners 1`,
		`sipbalancer_store_healthy{store="memory"} 1`,
		`# TYPE sipbalancer_call_setup_seconds histogram`,
	} {
		require.Contains(t, string(body), series)
	}
}

func TestReadyz(t *testing.T) {
	e := startEnv(t, envOpts{nodes: 2})
	type ready struct {
		Status    string   `json:"status"`
		Ready     bool     `json:"ready"`
		Problems  []string `json:"problems"`
		Listeners []string `json:"listeners"`
		Draining  bool     `json:"draining"`
		Nodes     struct {
			Available int            `json:"available"`
			Total     int            `json:"total"`
			States    map[string]int `json:"states"`
		} `json:"nodes"`
		Store struct {
			Kind    string `json:"kind"`
			Healthy bool   `json:"healthy"`
		} `json:"store"`
	}
	get := func() (int, ready) {
		var r ready
		code := e.getJSON(http.MethodGet, "/readyz", "", nil, &r)
		return code, r
	}

	code, r := get()
	require.Equal(t, http.StatusOK, code, "%+v", r)
	require.Equal(t, "ready", r.Status)
	require.True(t, r.Ready)
	require.Empty(t, r.Problems)
	require.Len(t, r.Listeners, 1)
	require.True(t, strings.HasPrefix(r.Listeners[0], "udp://127.0.0.1:"), r.Listeners[0])
	require.Equal(t, 2, r.Nodes.Available)
	require.Equal(t, 2, r.Nodes.Total)
	require.Equal(t, "memory", r.Store.Kind)
	require.True(t, r.Store.Healthy)

	// One node left: still ready. None: not ready, and the body says why.
	steps := []struct {
		path      string
		wantCode  int
		available int
	}{
		{"/api/v1/nodes/fs1/disable", http.StatusOK, 1},
		{"/api/v1/nodes/fs2/disable", http.StatusServiceUnavailable, 0},
		{"/api/v1/nodes/fs2/enable", http.StatusOK, 1},
	}
	for _, st := range steps {
		c, _, body := e.do(http.MethodPost, st.path, "", nil)
		require.Equal(t, http.StatusOK, c, "%s: %s", st.path, body)
		code, r = get()
		require.Equal(t, st.wantCode, code, "after %s: %+v", st.path, r)
		require.Equal(t, st.available, r.Nodes.Available, "after %s", st.path)
		if st.wantCode != http.StatusOK {
			require.Equal(t, "not_ready", r.Status)
			require.False(t, r.Ready)
			require.Contains(t, r.Problems, "no node can take a new call")
			require.Equal(t, 2, r.Nodes.States["disabled"])
		}
	}

	// A draining instance (SIGTERM) is not ready, whatever its nodes.
	e.app.Proxy().Drain()
	code, r = get()
	require.Equal(t, http.StatusServiceUnavailable, code)
	require.True(t, r.Draining)
	require.Equal(t, "not_ready", r.Status)
}

func TestNodes(t *testing.T) {
	e := startEnv(t, envOpts{nodes: 2})
	nodes := e.nodeList()
	require.Len(t, nodes, 2)
	for id, n := range nodes {
		require.Equal(t, e.nodes[id].Addr(), n.SIP)
		require.Equal(t, "UDP", n.Transport)
		require.Equal(t, 1, n.Weight)
		require.Equal(t, "up", n.State)
		require.True(t, n.Available)
		require.False(t, n.Retired)
		require.False(t, n.ESL.Configured)
	}

	// The full shape of one node, as documented in the README.
	var raw map[string]any
	require.Equal(t, http.StatusOK, e.getJSON(http.MethodGet, "/api/v1/nodes/fs1", "", nil, &raw))
	for _, k := range []string{"id", "host", "sip", "transport", "weight", "max_calls", "priority", "state", "reason",
		"since", "available", "retired", "load", "active_calls", "inflight", "passive_failures", "probe", "esl"} {
		require.Contains(t, raw, k)
	}
	require.Nil(t, raw["load"], "no Event Socket: no load figures")
	require.Equal(t, map[string]any{"configured": false, "connected": false}, raw["esl"])

	var ej errorJSON
	require.Equal(t, http.StatusNotFound, e.getJSON(http.MethodGet, "/api/v1/nodes/fs9", "", nil, &ej))
	require.Equal(t, `unknown node "fs9"`, ej.Error)
}

// TestOperatorAuth: reads are open; mutating requests need the token, or
// a loopback address when no token is configured.
func TestOperatorAuth(t *testing.T) {
	withToken := startEnv(t, envOpts{nodes: 1, token: testToken})
	noToken := startEnv(t, envOpts{nodes: 1})

	// The same balancer behind a non-loopback admin address (what Start
	// decides from the bound address, New decides from the configured
	// one).
	handlerOn := func(listen, token string) string {
		srv, err := admin.New(admin.Config{Listen: listen, Token: token}, admin.Deps{App: noToken.app})
		require.NoError(t, err)
		ts := httptest.NewServer(srv.Handler())
		t.Cleanup(ts.Close)
		return ts.URL
	}
	wildcardNoToken := handlerOn("0.0.0.0:9090", "")
	wildcardToken := handlerOn(":9090", testToken)

	tests := []struct {
		name     string
		base     string
		method   string
		path     string
		header   string // Authorization header
		wantCode int
		wantErr  string
	}{
		{"read open with token set", withToken.url, http.MethodGet, "/api/v1/nodes", "", http.StatusOK, ""},
		{"read open off loopback", wildcardNoToken, http.MethodGet, "/api/v1/nodes/fs1", "", http.StatusOK, ""},
		{"no header", withToken.url, http.MethodPost, "/api/v1/nodes/fs1/drain", "", http.StatusUnauthorized, "Authorization: Bearer"},
		{"wrong token", withToken.url, http.MethodPost, "/api/v1/nodes/fs1/drain", "Bearer nope", http.StatusUnauthorized, "invalid bearer token"},
		{"token prefix", withToken.url, http.MethodPost, "/api/v1/nodes/fs1/drain", "Bearer " + testToken[:5], http.StatusUnauthorized, "invalid bearer token"},
		{"basic scheme", withToken.url, http.MethodPost, "/api/v1/nodes/fs1/drain", "Basic " + testToken, http.StatusUnauthorized, "Authorization: Bearer"},
		{"right token", withToken.url, http.MethodPost, "/api/v1/nodes/fs1/drain", "Bearer " + testToken, http.StatusOK, ""},
		{"scheme any case", withToken.url, http.MethodPost, "/api/v1/nodes/fs1/enable", "bearer " + testToken, http.StatusOK, ""},
		{"log level needs token", withToken.url, http.MethodPut, "/api/v1/log/level", "", http.StatusUnauthorized, "Bearer"},
		{"reload needs token", withToken.url, http.MethodPost, "/api/v1/reload", "Bearer x", http.StatusUnauthorized, "invalid"},
		{"no token on loopback", noToken.url, http.MethodPost, "/api/v1/nodes/fs1/enable", "", http.StatusOK, ""},
		{"no token off loopback", wildcardNoToken, http.MethodPost, "/api/v1/nodes/fs1/enable", "", http.StatusForbidden, "set admin.token"},
		{"no token off loopback, header sent", wildcardNoToken, http.MethodPost, "/api/v1/reload", "Bearer " + testToken, http.StatusForbidden, "SIPBALANCER_ADMIN_TOKEN"},
		{"token off loopback", wildcardToken, http.MethodPost, "/api/v1/nodes/fs1/enable", "Bearer " + testToken, http.StatusOK, ""},
		{"token off loopback, none sent", wildcardToken, http.MethodPost, "/api/v1/nodes/fs1/enable", "", http.StatusUnauthorized, "Bearer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, tc.base+tc.path, strings.NewReader(`{"level":"info"}`))
			require.NoError(t, err)
			if tc.header != "" {
				req.Header.Set("Authorization", tc.header)
			}
			res, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer res.Body.Close()
			require.Equal(t, tc.wantCode, res.StatusCode)
			require.Equal(t, "application/json", res.Header.Get("Content-Type"))
			if tc.wantCode == http.StatusUnauthorized {
				require.Contains(t, res.Header.Get("WWW-Authenticate"), "Bearer")
			}
			if tc.wantErr != "" {
				var ej errorJSON
				require.NoError(t, jsonDecode(res.Body, &ej))
				require.Contains(t, ej.Error, tc.wantErr)
			}
		})
	}
	// Refused requests changed nothing.
	require.Equal(t, "up", withToken.node("fs1").State)
}

// TestDrainEnableDisable: the operator's wish is in force when the answer
// comes back, and the node list shows it.
func TestDrainEnableDisable(t *testing.T) {
	e := startEnv(t, envOpts{nodes: 2, token: testToken})
	steps := []struct {
		action, wantState, wantReason string
		available                     bool
	}{
		{"drain", "draining", "operator_drain", false},
		{"disable", "disabled", "operator_disable", false},
		{"enable", "up", "", true},
		{"drain", "draining", "operator_drain", false},
		{"enable", "up", "", true},
	}
	for _, st := range steps {
		var n nodeState
		code := e.getJSON(http.MethodPost, "/api/v1/nodes/fs1/"+st.action, testToken, nil, &n)
		require.Equal(t, http.StatusOK, code, st.action)
		require.Equal(t, st.wantState, n.State, st.action)
		require.Equal(t, st.wantReason, n.Reason, st.action)
		require.Equal(t, st.available, n.Available, st.action)
		// The dispatcher has it already, and the list shows it.
		require.Equal(t, st.wantState, e.app.Dispatcher().Node("fs1").State().String())
		list := e.nodeList()
		require.Equal(t, st.wantState, list["fs1"].State, st.action)
		require.Equal(t, "up", list["fs2"].State, "the other node is untouched")
	}

	var ej errorJSON
	require.Equal(t, http.StatusNotFound, e.getJSON(http.MethodPost, "/api/v1/nodes/fs1/reboot", testToken, nil, &ej))
	require.Contains(t, ej.Error, `unknown action "reboot"`)
	require.Equal(t, http.StatusNotFound, e.getJSON(http.MethodPost, "/api/v1/nodes/fs9/drain", testToken, nil, &ej))
	require.Contains(t, ej.Error, `unknown node "fs9"`)
}

// TestDrainUnderCalls: a node drained through the API gets no new call,
// and the call it had goes on until it ends normally.
func TestDrainUnderCalls(t *testing.T) {
	e := startEnv(t, envOpts{nodes: 2, token: testToken})
	_, held, hangup := e.hold()
	other := "fs1"
	if held == "fs1" {
		other = "fs2"
	}

	var n nodeState
	require.Equal(t, http.StatusOK, e.getJSON(http.MethodPost, "/api/v1/nodes/"+held+"/drain", testToken, nil, &n))
	require.Equal(t, "draining", n.State)
	require.EqualValues(t, 1, n.ActiveCalls, "the held call is still counted on the drained node")

	perNode := e.calls(20)
	require.Equal(t, map[string]int{other: 20}, perNode, "no new call on the drained node")

	hangup()
	require.Equal(t, http.StatusOK, e.getJSON(http.MethodPost, "/api/v1/nodes/"+held+"/enable", testToken, nil, &n))
	require.Equal(t, "up", n.State)
	perNode = e.calls(10)
	require.Equal(t, 5, perNode[held], "enabled again, it takes its share: %v", perNode)
}

// TestReload: the API re-reads the file; nodes added take calls, nodes
// removed drain without failing a call, a bad file changes nothing, and
// what needs a restart is named.
func TestReload(t *testing.T) {
	e := startEnv(t, envOpts{nodes: 1, token: testToken})
	e.startNode(2)
	type result struct {
		Applied      []string `json:"applied"`
		NeedsRestart []string `json:"needs_restart"`
	}

	// Add fs2: it gets calls.
	e.writeConfig([]string{"fs1", "fs2"}, "")
	var res result
	require.Equal(t, http.StatusOK, e.getJSON(http.MethodPost, "/api/v1/reload", testToken, nil, &res))
	require.Equal(t, result{Applied: []string{"nodes"}, NeedsRestart: []string{}}, res)
	require.Contains(t, e.nodeList(), "fs2")
	perNode := e.calls(10)
	require.Equal(t, map[string]int{"fs1": 5, "fs2": 5}, perNode)

	// Remove the node holding a call: the call completes, the node drains.
	callID, held, hangup := e.hold()
	kept := map[string]string{"fs1": "fs2", "fs2": "fs1"}[held]
	e.writeConfig([]string{kept}, "")
	require.Equal(t, http.StatusOK, e.getJSON(http.MethodPost, "/api/v1/reload", testToken, nil, &res))
	require.Equal(t, []string{"nodes"}, res.Applied)
	// While it carries the call it stays in the list and the metrics,
	// retired and draining, so that its calls can be watched ending.
	listed, ok := e.nodeList()[held]
	require.True(t, ok, "a removed node with a call left the list")
	require.True(t, listed.Retired)
	require.EqualValues(t, 1, listed.ActiveCalls)
	fams := e.scrape()
	require.EqualValues(t, 1, value(fams, "sipbalancer_node_active_calls", map[string]string{"node": held}))
	require.EqualValues(t, 1, value(fams, "sipbalancer_node_state", map[string]string{"node": held, "state": "draining"}))
	removed := e.node(held)
	require.True(t, removed.Retired)
	require.Equal(t, "draining", removed.State)
	require.Equal(t, "removed_from_config", removed.Reason)
	var ej errorJSON
	require.Equal(t, http.StatusConflict, e.getJSON(http.MethodPost, "/api/v1/nodes/"+held+"/enable", testToken, nil, &ej))
	require.Contains(t, ej.Error, "removed from the configuration")
	require.Equal(t, map[string]int{kept: 6}, e.calls(6))
	hangup()
	rec, ok := e.nodes[held].Call(callID)
	require.True(t, ok)
	require.True(t, rec.Ended, "the removed node's call ended normally: %+v", rec)
	// Its last call over, it leaves the list and the metrics.
	require.Eventually(t, func() bool { _, listed := e.nodeList()[held]; return !listed }, time.Minute, 10*time.Millisecond, "%s still listed with no call", held)
	require.Zero(t, value(e.scrape(), "sipbalancer_node_state", map[string]string{"node": held}))

	// An invalid file is rejected with every problem, and nothing changes.
	require.NoError(t, writeFile(e.path, e.configYAML([]string{"fs1", "fs2"}, "failover:\n  max_attempts: 0\nhealth:\n  options:\n    fall: 0\n")))
	require.Equal(t, http.StatusBadRequest, e.getJSON(http.MethodPost, "/api/v1/reload", testToken, nil, &ej))
	require.Equal(t, "configuration rejected; the running configuration is kept", ej.Error)
	require.Len(t, ej.Errors, 2, "%v", ej.Errors)
	require.Contains(t, strings.Join(ej.Errors, "\n"), "health.options.fall: must be >= 1, got 0")
	require.Contains(t, strings.Join(ej.Errors, "\n"), "failover.max_attempts: must be >= 1, got 0")
	require.NotContains(t, e.nodeList(), held, "the rejected file's node list is not applied")

	// Listen addresses and log level: one needs a restart, the other is
	// applied at once.
	yaml := strings.Replace(e.configYAML([]string{kept}, ""), "udp://127.0.0.1:0", "udp://127.0.0.1:5999", 1)
	yaml = strings.Replace(yaml, "level: info", "level: debug", 1)
	require.NoError(t, writeFile(e.path, yaml))
	require.Equal(t, http.StatusOK, e.getJSON(http.MethodPost, "/api/v1/reload", testToken, nil, &res))
	require.Equal(t, result{Applied: []string{"log.level"}, NeedsRestart: []string{"sip.listen"}}, res)
	require.Equal(t, zap.DebugLevel, e.level.Level())
}

func TestCalls(t *testing.T) {
	e := startEnv(t, envOpts{nodes: 1})
	ctx := context.Background()
	type call struct {
		CallID    string    `json:"call_id"`
		Node      string    `json:"node"`
		NodeState string    `json:"node_state"`
		State     string    `json:"state"`
		Attempt   int       `json:"attempt"`
		Outbound  bool      `json:"outbound"`
		Via       string    `json:"via"`
		Expires   time.Time `json:"expires"`
		Why       string    `json:"why"`
		Source    string    `json:"source"`
	}
	// Call-IDs may hold "/" and "@": the path carries it escaped.
	const callID = "a84b4c76e66710/x@pc33.atlanta.example"
	path := "/api/v1/calls/" + url.PathEscape(callID)
	store := e.app.Store()
	require.NoError(t, store.Bind(ctx, session.Binding{CallID: callID, NodeID: "fs1", Attempt: 1, Via: "10.0.0.5:5060"}, time.Minute))

	var c call
	require.Equal(t, http.StatusOK, e.getJSON(http.MethodGet, path, "", nil, &c))
	require.Equal(t, callID, c.CallID)
	require.Equal(t, "fs1", c.Node)
	require.Equal(t, "up", c.NodeState)
	require.Equal(t, "early", c.State)
	require.Equal(t, 1, c.Attempt)
	require.Equal(t, "10.0.0.5:5060", c.Via)
	require.WithinDuration(t, time.Now().Add(time.Minute), c.Expires, 10*time.Second)
	require.Contains(t, c.Why, "failover attempt 2")
	require.Contains(t, c.Source, "affinity store (memory)")
	require.Contains(t, c.Source, "Record-Route")

	require.NoError(t, store.Confirm(ctx, callID, "fs1", time.Hour))
	require.Equal(t, http.StatusOK, e.getJSON(http.MethodGet, path, "", nil, &c))
	require.Equal(t, "confirmed", c.State)
	require.Contains(t, c.Why, "owns the call")

	// A real call through the balancer is found too.
	placed, node, hangup := e.hold()
	require.Equal(t, http.StatusOK, e.getJSON(http.MethodGet, "/api/v1/calls/"+url.PathEscape(placed), "", nil, &c))
	require.Equal(t, node, c.Node)
	require.Equal(t, "confirmed", c.State)
	require.Equal(t, 0, c.Attempt)
	hangup()

	var ej errorJSON
	require.Equal(t, http.StatusNotFound, e.getJSON(http.MethodGet, "/api/v1/calls/nope@nowhere", "", nil, &ej))
	require.Contains(t, ej.Error, `no binding for Call-ID "nope@nowhere"`)
	require.Equal(t, http.StatusBadRequest, e.getJSON(http.MethodGet, "/api/v1/calls/", "", nil, &ej))
	require.Contains(t, ej.Error, "no Call-ID")
}

func TestLogLevel(t *testing.T) {
	e := startEnv(t, envOpts{nodes: 1, token: testToken})
	type level struct {
		Level string `json:"level"`
	}
	var l level
	require.Equal(t, http.StatusOK, e.getJSON(http.MethodGet, "/api/v1/log/level", "", nil, &l))
	require.Equal(t, "info", l.Level)
	require.False(t, e.log.Core().Enabled(zap.DebugLevel))

	tests := []struct {
		body     string
		wantCode int
		want     string // level in force afterwards
		wantErr  string
	}{
		{`{"level":"debug"}`, http.StatusOK, "debug", ""},
		{`{"level":"warn"}`, http.StatusOK, "warn", ""},
		{`{"level":"verbose"}`, http.StatusBadRequest, "warn", `unknown level "verbose"`},
		{`{"level":"panic"}`, http.StatusBadRequest, "warn", `unknown level "panic"`},
		{`{"lvl":"debug"}`, http.StatusBadRequest, "warn", "unknown field"},
		{`debug`, http.StatusBadRequest, "warn", "request body"},
		{`{"level":"info"}`, http.StatusOK, "info", ""},
	}
	for _, tc := range tests {
		code, _, body := e.do(http.MethodPut, "/api/v1/log/level", testToken, tc.body)
		require.Equal(t, tc.wantCode, code, "%s: %s", tc.body, body)
		if tc.wantErr != "" {
			var ej errorJSON
			require.NoError(t, json.Unmarshal(body, &ej))
			require.Contains(t, ej.Error, tc.wantErr)
		}
		require.Equal(t, tc.want, e.level.Level().String(), tc.body)
	}
	// It takes effect on the logger the balancer uses.
	_, _, _ = e.do(http.MethodPut, "/api/v1/log/level", testToken, `{"level":"debug"}`)
	require.True(t, e.log.Core().Enabled(zap.DebugLevel))
}

func TestMethodsAndPaths(t *testing.T) {
	e := startEnv(t, envOpts{nodes: 1, token: testToken})
	tests := []struct {
		method, path string
		wantCode     int
		wantAllow    string
	}{
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodDelete, "/metrics", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodGet, "/api/v1/reload", http.StatusMethodNotAllowed, "POST"},
		{http.MethodPut, "/api/v1/nodes", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodDelete, "/api/v1/nodes/fs1", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodGet, "/api/v1/nodes/fs1/drain", http.StatusMethodNotAllowed, "POST"},
		{http.MethodPost, "/api/v1/log/level", http.StatusMethodNotAllowed, "GET, HEAD, PUT"},
		{http.MethodPost, "/api/v1/calls/x", http.StatusMethodNotAllowed, "GET, HEAD"},
		{http.MethodGet, "/nope", http.StatusNotFound, ""},
		{http.MethodGet, "/api/v1/node", http.StatusNotFound, ""},
		{http.MethodHead, "/readyz", http.StatusOK, ""},
	}
	for _, tc := range tests {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			code, h, body := e.do(tc.method, tc.path, testToken, nil)
			require.Equal(t, tc.wantCode, code, "%s", body)
			assert.Equal(t, tc.wantAllow, h.Get("Allow"))
			if tc.method != http.MethodHead {
				require.Equal(t, "application/json", h.Get("Content-Type"))
				require.Contains(t, string(body), `"error"`)
			}
		})
	}
}

// TestShutdownStopsServing: after Shutdown the address is closed.
func TestShutdownStopsServing(t *testing.T) {
	e := startEnv(t, envOpts{nodes: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, e.srv.Shutdown(ctx))
	_, err := http.Get(e.url + "/healthz")
	require.Error(t, err)
}

// TestOperationsUnderLoad: drain, disable, enable and reload through the
// API while calls flow; no call fails.
func TestOperationsUnderLoad(t *testing.T) {
	e := startEnv(t, envOpts{nodes: 2, token: testToken})
	e.startNode(3)
	answered := func() int64 {
		var n int64
		for _, node := range e.nodes {
			n += node.Stats().Answered
		}
		return n
	}
	const calls = 600
	type result struct {
		rep *callgen.Report
		err error
	}
	done := make(chan result, 1)
	go func() {
		rep, err := e.runCalls(calls)
		done <- result{rep, err}
	}()
	after := func(n int64) {
		t.Helper()
		require.Eventually(t, func() bool { return answered() >= n }, time.Minute, 5*time.Millisecond, "calls stalled at %d", answered())
	}
	post := func(path string) {
		t.Helper()
		code, _, body := e.do(http.MethodPost, path, testToken, nil)
		require.Equal(t, http.StatusOK, code, "%s: %s", path, body)
	}

	after(100)
	post("/api/v1/nodes/fs1/drain")
	after(150)
	e.writeConfig([]string{"fs1", "fs2", "fs3"}, "")
	post("/api/v1/reload")
	after(250)
	post("/api/v1/nodes/fs2/disable")
	after(300)
	post("/api/v1/nodes/fs1/enable")
	post("/api/v1/nodes/fs2/enable")
	after(400)
	e.writeConfig([]string{"fs2", "fs3"}, "")
	post("/api/v1/reload")

	res := <-done
	require.NoError(t, res.err)
	perNode := e.checkReport(res.rep, calls)
	total := 0
	for _, n := range perNode {
		total += n
	}
	require.Equal(t, calls, total, "every call answered: %v", perNode)
	require.Positive(t, perNode["fs3"], "the node added by the reload took calls: %v", perNode)
}

func TestPprofIsGuarded(t *testing.T) {
	open := startEnv(t, envOpts{nodes: 1})
	code, _, _ := open.do(http.MethodGet, "/debug/pprof/cmdline", "", nil)
	require.Equal(t, http.StatusOK, code, "loopback without a token serves profiles")

	guarded := startEnv(t, envOpts{nodes: 1, token: testToken})
	code, _, _ = guarded.do(http.MethodGet, "/debug/pprof/cmdline", "", nil)
	require.Equal(t, http.StatusUnauthorized, code, "a configured token is required")
	code, _, _ = guarded.do(http.MethodGet, "/debug/pprof/cmdline", testToken, nil)
	require.Equal(t, http.StatusOK, code)
}
