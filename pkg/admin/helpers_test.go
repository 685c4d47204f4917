package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/internal/app"
	"github.com/sipbalancer/sipbalancer/pkg/admin"
	"github.com/sipbalancer/sipbalancer/pkg/callgen"
	"github.com/sipbalancer/sipbalancer/pkg/config"
	"github.com/sipbalancer/sipbalancer/pkg/fsemu"
	"github.com/sipbalancer/sipbalancer/pkg/logging"
)

func TestMain(m *testing.M) {
	// sipgo logs through one package-wide logger; keep test output readable.
	sip.SetDefaultLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))
	os.Exit(m.Run())
}

// env is a real balancer (the wiring cmd/sipbalancer runs) in front of
// emulated FreeSWITCH nodes, with its admin server listening on loopback.
type env struct {
	t     *testing.T
	app   *app.App
	nodes map[string]*fsemu.Node
	// lines are the nodes' YAML entries, by ID, for rewriting the file.
	lines map[string]string
	srv   *admin.Server
	url   string
	path  string // the configuration file
	token string
	// session is kept for rewriting the file.
	session string
	level   zap.AtomicLevel
	log     *zap.Logger
}

type envOpts struct {
	// nodes are started as fs1..fsN on 127.0.1.1..N.
	nodes int
	// token is admin.token ("" for none).
	token string
	// session is the session section's extra keys, indented two spaces.
	session string
}

const testToken = "s3cret-admin-token"

func startEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	e := &env{t: t, nodes: map[string]*fsemu.Node{}, lines: map[string]string{}, token: o.token}
	ids := make([]string, 0, o.nodes)
	for i := 1; i <= o.nodes; i++ {
		ids = append(ids, e.startNode(i))
	}
	e.path = filepath.Join(t.TempDir(), "sipbalancer.yaml")
	e.session = o.session
	e.writeConfig(ids, "")
	cfg, err := config.Load(e.path)
	require.NoError(t, err)

	e.log, e.level, err = logging.New("info", "json", false, io.Discard)
	require.NoError(t, err)
	e.app, err = app.New(cfg, e.log)
	require.NoError(t, err)
	e.app.UseLogLevel(e.level)
	require.NoError(t, e.app.Start())
	t.Cleanup(func() { e.app.Close() })

	e.srv, err = admin.New(admin.Config{Listen: cfg.Admin.Listen, Token: cfg.Admin.Token}, admin.Deps{
		App: e.app, Reload: e.reload, Level: &e.level, Logger: e.log,
	})
	require.NoError(t, err)
	require.NoError(t, e.srv.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, e.srv.Shutdown(ctx))
	})
	e.url = "http://" + e.srv.Addr()
	return e
}

// startNode starts fs<i> on 127.0.1.<i> and returns its ID.
func (e *env) startNode(i int) string {
	e.t.Helper()
	id := fmt.Sprintf("fs%d", i)
	ctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	n, err := fsemu.Start(ctx, fsemu.Config{
		ID:     id,
		Listen: fmt.Sprintf("127.0.1.%d:0", i),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	require.NoError(e.t, err)
	e.t.Cleanup(func() { n.Close() })
	e.nodes[id] = n
	e.lines[id] = fmt.Sprintf("  - { id: %s, sip: %q }\n", id, n.Addr())
	return id
}

// configYAML is the configuration with the given nodes; extra is appended.
func (e *env) configYAML(ids []string, extra string) string {
	var nodes strings.Builder
	for _, id := range ids {
		nodes.WriteString(e.lines[id])
	}
	return fmt.Sprintf(`
sip:
  listen: ["udp://127.0.0.1:0"]
nodes:
%s
dispatcher:
  policy: weighted_round_robin
session:
  token_secret: admin-test-secret
%s
admin:
  listen: "127.0.0.1:0"
  token: %q
log:
  level: info
  sampling: false
%s`, nodes.String(), e.session, e.token, extra)
}

// writeConfig writes the configuration file with the given nodes.
func (e *env) writeConfig(ids []string, extra string) {
	e.t.Helper()
	require.NoError(e.t, os.WriteFile(e.path, []byte(e.configYAML(ids, extra)), 0o600))
}

// reload is what cmd/sipbalancer passes: re-read the file, apply it.
func (e *env) reload() ([]string, []string, error) {
	cfg, err := config.Load(e.path)
	if err != nil {
		return nil, nil, err
	}
	return e.app.Reload(cfg)
}

// do sends a request; token "" sends no Authorization header. body, when
// not nil, is sent as JSON (a string is sent as is).
func (e *env) do(method, path, token string, body any) (int, http.Header, []byte) {
	e.t.Helper()
	return doRequest(e.t, e.url, method, path, token, body)
}

func doRequest(t *testing.T, base, method, path, token string, body any) (int, http.Header, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		require.NoError(t, err)
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, base+path, rd)
	require.NoError(t, err)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, res.Header, data
}

// getJSON sends a request and decodes the JSON answer into out.
func (e *env) getJSON(method, path, token string, body, out any) int {
	e.t.Helper()
	code, h, data := e.do(method, path, token, body)
	require.Equal(e.t, "application/json", h.Get("Content-Type"), "%s %s: %s", method, path, data)
	require.NoError(e.t, json.Unmarshal(data, out), "%s", data)
	return code
}

// nodeState is the part of a node's JSON the tests read.
type nodeState struct {
	ID          string `json:"id"`
	SIP         string `json:"sip"`
	Transport   string `json:"transport"`
	Weight      int    `json:"weight"`
	State       string `json:"state"`
	Reason      string `json:"reason"`
	Available   bool   `json:"available"`
	Retired     bool   `json:"retired"`
	ActiveCalls int64  `json:"active_calls"`
	ESL         struct {
		Configured bool `json:"configured"`
	} `json:"esl"`
}

func (e *env) node(id string) nodeState {
	e.t.Helper()
	var n nodeState
	require.Equal(e.t, http.StatusOK, e.getJSON(http.MethodGet, "/api/v1/nodes/"+id, "", nil, &n))
	return n
}

func (e *env) nodeList() map[string]nodeState {
	e.t.Helper()
	var body struct {
		Nodes []nodeState `json:"nodes"`
	}
	require.Equal(e.t, http.StatusOK, e.getJSON(http.MethodGet, "/api/v1/nodes", "", nil, &body))
	out := map[string]nodeState{}
	for _, n := range body.Nodes {
		out[n.ID] = n
	}
	return out
}

// runCalls places n calls and returns callgen's report; it may run on any
// goroutine.
func (e *env) runCalls(n int) (*callgen.Report, error) {
	cfg := callgen.NewConfig(e.app.Proxy().Addr("udp"))
	cfg.Calls = n
	cfg.Rate = 200
	cfg.Timeout = 10 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return callgen.Run(ctx, cfg)
}

// calls places n complete calls and requires every one to succeed; it
// returns how many each node answered, from the nodes' own records.
func (e *env) calls(n int) map[string]int {
	e.t.Helper()
	rep, err := e.runCalls(n)
	require.NoError(e.t, err)
	return e.checkReport(rep, n)
}

// checkReport requires n calls, all complete, and counts them per node.
func (e *env) checkReport(rep *callgen.Report, n int) map[string]int {
	e.t.Helper()
	require.Equal(e.t, n, rep.Attempted)
	perNode := map[string]int{}
	for _, r := range rep.Results {
		require.True(e.t, r.OK(), "call %s failed: %+v", r.CallID, r)
		perNode[e.answeredBy(r.CallID)]++
	}
	return perNode
}

// answeredBy names the node that answered callID.
func (e *env) answeredBy(callID string) string {
	e.t.Helper()
	owner := ""
	for id, n := range e.nodes {
		if r, ok := n.Call(callID); ok && r.Answered {
			require.Empty(e.t, owner, "call %s answered twice", callID)
			owner = id
		}
	}
	require.NotEmpty(e.t, owner, "no node answered %s", callID)
	return owner
}

// hold sets up a call and leaves it up; hang it up with the returned
// function, which requires the BYE to succeed.
func (e *env) hold() (callID, node string, hangup func()) {
	e.t.Helper()
	cfg := callgen.NewConfig(e.app.Proxy().Addr("udp"))
	cfg.Timeout = 10 * time.Second
	u, err := callgen.NewUAC(cfg)
	require.NoError(e.t, err)
	e.t.Cleanup(func() { u.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, res, err := u.Invite(ctx)
	require.NoError(e.t, err)
	require.Equal(e.t, 200, res.StatusCode)
	callID = d.CallID()
	return callID, e.answeredBy(callID), func() {
		e.t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		res, err := d.Bye(ctx)
		require.NoError(e.t, err)
		require.Equal(e.t, 200, res.StatusCode)
	}
}

func jsonDecode(r io.Reader, v any) error { return json.NewDecoder(r).Decode(v) }

func writeFile(path, body string) error { return os.WriteFile(path, []byte(body), 0o600) }
