package sip

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/session"
)

// testProxy builds a Proxy that is not serving, with one UDP listener on
// 10.0.0.1:5060 and nodes fs1 (10.0.1.1:5060) and fs2 (10.0.1.2:5060/TCP).
func testProxy(t testing.TB) *Proxy {
	t.Helper()
	pol, err := dispatcher.NewPolicy("weighted_round_robin")
	require.NoError(t, err)
	d, err := dispatcher.New(pol, []dispatcher.Spec{
		{ID: "fs1", Host: "10.0.1.1", Addr: netip.MustParseAddrPort("10.0.1.1:5060"), Transport: "UDP", Weight: 1},
		{ID: "fs2", Host: "10.0.1.2", Addr: netip.MustParseAddrPort("10.0.1.2:5060"), Transport: "TCP", Weight: 1},
	})
	require.NoError(t, err)
	signer, err := session.NewSigner([]byte("k"))
	require.NoError(t, err)
	store := session.NewMemory(session.MemoryOptions{})
	t.Cleanup(func() { store.Close() })
	p, err := New(Config{
		Listen:        []Listen{{Network: "udp", Addr: "10.0.0.1:5060"}},
		InviteTimeout: time.Second, MaxAttempts: 3,
	}, Deps{Dispatcher: d, Store: store, Signer: signer, Secret: []byte("k")})
	require.NoError(t, err)
	l := &listener{network: "udp", transport: "UDP", bound: netip.MustParseAddrPort("10.0.0.1:5060")}
	require.NoError(t, l.advertiseFor("", ""))
	p.listeners = []*listener{l}
	p.byNetwork["udp"] = l
	p.self = newSelfSet(p.listeners)
	return p
}

func parseReq(t testing.TB, raw string) *sip.Request {
	t.Helper()
	raw = strings.ReplaceAll(strings.ReplaceAll(strings.TrimLeft(raw, "\n"), "\r\n", "\n"), "\n", "\r\n")
	msg, err := sip.NewParser().ParseSIP([]byte(raw))
	require.NoError(t, err)
	req, ok := msg.(*sip.Request)
	require.True(t, ok)
	req.SetSource("192.0.2.10:5060")
	req.SetTransport("UDP")
	return req
}

const inviteRaw = `
INVITE sip:1000@10.0.0.1:5060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport
Max-Forwards: 70
To: <sip:1000@10.0.0.1>
From: "Alice" <sip:alice@192.0.2.10>;tag=1928301774
Call-ID: a84b4c76e66710@pc33.example.com
CSeq: 314159 INVITE
Contact: <sip:alice@192.0.2.10:5060>
Content-Type: application/sdp
Content-Length: 4

v=0
`

func TestCheckRequest(t *testing.T) {
	tests := []struct {
		name     string
		edit     func(string) string
		wantCode int
		wantMF   uint32
	}{
		{name: "valid", edit: func(s string) string { return s }, wantMF: 69},
		{name: "max-forwards 1 is forwarded with 0", edit: func(s string) string {
			return strings.Replace(s, "Max-Forwards: 70", "Max-Forwards: 1", 1)
		}, wantMF: 0},
		{name: "max-forwards 0", edit: func(s string) string {
			return strings.Replace(s, "Max-Forwards: 70", "Max-Forwards: 0", 1)
		}, wantCode: 483},
		{name: "no max-forwards gets the default", edit: func(s string) string {
			return strings.Replace(s, "Max-Forwards: 70\n", "", 1)
		}, wantMF: 69},
		{name: "version", edit: func(s string) string {
			return strings.Replace(s, "INVITE sip:1000@10.0.0.1:5060 SIP/2.0", "INVITE sip:1000@10.0.0.1:5060 SIP/7.0", 1)
		}, wantCode: 505},
		{name: "cseq method mismatch", edit: func(s string) string {
			return strings.Replace(s, "CSeq: 314159 INVITE", "CSeq: 314159 OPTIONS", 1)
		}, wantCode: 400},
		{name: "duplicate from", edit: func(s string) string {
			return strings.Replace(s, "Call-ID:", "From: <sip:mallory@evil>;tag=x\nCall-ID:", 1)
		}, wantCode: 400},
		{name: "duplicate content-length", edit: func(s string) string {
			return strings.Replace(s, "Content-Length: 4", "Content-Length: 4\nContent-Length: 4", 1)
		}, wantCode: 400},
		{name: "missing from", edit: func(s string) string {
			return strings.Replace(s, "From: \"Alice\" <sip:alice@192.0.2.10>;tag=1928301774\n", "", 1)
		}, wantCode: 400},
		{name: "proxy-require", edit: func(s string) string {
			return strings.Replace(s, "Call-ID:", "Proxy-Require: foo\nCall-ID:", 1)
		}, wantCode: 420},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := parseReq(t, tc.edit(inviteRaw))
			mf, rej := checkRequest(req)
			if tc.wantCode != 0 {
				require.NotNil(t, rej)
				require.Equal(t, tc.wantCode, rej.code)
				return
			}
			require.Nil(t, rej)
			require.Equal(t, tc.wantMF, mf)
		})
	}
}

func TestBuildRequestLeavesInboundAlone(t *testing.T) {
	p := testProxy(t)
	in := parseReq(t, strings.Replace(inviteRaw, "Call-ID:",
		"Route: <sip:10.0.0.1:5060;lr>\nRoute: <sip:next.example.com;lr>\nRecord-Route: <sip:carrier.example.com;lr>\nCall-ID:", 1))
	in.SetSource("192.0.2.99:5099")
	before := in.String()

	r := p.route(in)
	require.Equal(t, 1, r.ours)
	require.NotNil(t, r.next)
	require.Equal(t, "next.example.com", r.next.Host)

	n := p.disp.Node("fs1")
	token := p.signer.Sign(session.Token{NodeID: "fs1"}, string(*in.CallID()), tagOf(in.From().Params))
	out := buildRequest(in, &outSpec{
		via:        newVia(p.listenerFor("UDP"), "UDP", p.br.branch(in, "INVITE", 0)),
		prevVia:    receivedVia(in),
		dropRoutes: r.ours,
		maxFwd:     69,
		rr:         p.recordRoute("UDP", "UDP", token),
		transport:  "UDP",
		dest:       n.Spec.Addr.String(),
	})
	require.Equal(t, before, in.String(), "inbound request was modified")

	vias := out.GetHeaders("Via")
	require.Len(t, vias, 2)
	require.Contains(t, vias[0].Value(), "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKsb")
	require.Contains(t, vias[1].Value(), "received=192.0.2.99")
	require.Contains(t, vias[1].Value(), "rport=5099")
	require.Equal(t, uint32(69), out.MaxForwards().Val())
	routes := out.GetHeaders("Route")
	require.Len(t, routes, 1)
	require.Equal(t, "<sip:next.example.com;lr>", routes[0].Value())
	rrs := out.GetHeaders("Record-Route")
	require.Len(t, rrs, 2)
	require.Contains(t, rrs[0].Value(), "sip:10.0.0.1:5060;transport=udp;lr;sbt=fs1.i.")
	require.Equal(t, "<sip:carrier.example.com;lr>", rrs[1].Value())
	require.Equal(t, in.Body(), out.Body())
	require.Equal(t, "10.0.1.1:5060", out.Destination())

	// The copy round-trips through the parser.
	_, err := sip.NewParser().ParseSIP([]byte(out.String()))
	require.NoError(t, err)
}

func TestLoopAndSpiral(t *testing.T) {
	p := testProxy(t)
	in := parseReq(t, inviteRaw)
	out := buildRequest(in, &outSpec{
		via:    newVia(p.listenerFor("UDP"), "UDP", p.br.branch(in, "INVITE", 0)),
		maxFwd: 69, transport: "UDP", dest: "10.0.0.1:5060",
	})
	back := parseReq(t, out.String())
	require.True(t, p.looped(back), "the same request coming back is a loop")

	spiral := parseReq(t, strings.Replace(out.String(), "INVITE sip:1000@10.0.0.1:5060", "INVITE sip:2000@10.0.0.1:5060", 1))
	require.False(t, p.looped(spiral), "a changed Request-URI is a spiral, not a loop")

	require.False(t, p.looped(in))
}

func TestBranchDeterminism(t *testing.T) {
	p := testProxy(t)
	in := parseReq(t, inviteRaw)
	b0 := p.br.branch(in, "INVITE", 0)
	require.Equal(t, b0, p.br.branch(in, "INVITE", 0))
	require.NotEqual(t, b0, p.br.branch(in, "INVITE", 1))
	_, ours := isOurBranch(b0)
	require.True(t, ours)

	// A CANCEL for the INVITE derives the INVITE's branch.
	cancel := parseReq(t, strings.NewReplacer("INVITE sip:", "CANCEL sip:", "314159 INVITE", "314159 CANCEL").Replace(inviteRaw))
	require.Equal(t, b0, p.br.branch(cancel, "INVITE", 0))

	// Another instance with the same secret agrees; one without does not.
	other := newBrancher([]byte("k"))
	require.Equal(t, b0, other.branch(in, "INVITE", 0))
	require.NotEqual(t, b0, newBrancher([]byte("x")).branch(in, "INVITE", 0))
}

func TestRouteDirectionFromToken(t *testing.T) {
	p := testProxy(t)
	callID, callerTag, nodeTag := "c1@x", "caller", "node"
	tok := p.signer.Sign(session.Token{NodeID: "fs2"}, callID, callerTag)
	rr := "<sip:10.0.0.1:5060;transport=udp;lr;sbt=" + tok + ">"
	mk := func(fromTag, toTag string) *sip.Request {
		return parseReq(t, `
BYE sip:mod_sofia@10.0.1.2:5060 SIP/2.0
Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbye1
Max-Forwards: 70
Route: `+rr+`
To: <sip:1000@10.0.0.1>;tag=`+toTag+`
From: <sip:alice@192.0.2.10>;tag=`+fromTag+`
Call-ID: `+callID+`
CSeq: 2 BYE
Content-Length: 0

`)
	}
	down := p.route(mk(callerTag, nodeTag))
	require.True(t, down.hasToken)
	require.True(t, down.sameDir)
	require.Equal(t, "fs2", down.token.NodeID)
	require.Equal(t, 1, down.ours)

	up := p.route(mk(nodeTag, callerTag))
	require.True(t, up.hasToken)
	require.False(t, up.sameDir)

	forged := p.route(mk("someone", "else"))
	require.False(t, forged.hasToken)
	require.Equal(t, 1, forged.ours, "our address is still ours to pop")
}

// TestHiddenViasComeBack: a request a node sends toward a carrier with
// topology hiding carries only our Via; the answer gets the node's Vias
// back, in order, in place of ours.
func TestHiddenViasComeBack(t *testing.T) {
	p := testProxy(t)
	in := parseReq(t, strings.Replace(inviteRaw, "Max-Forwards: 70",
		"Via: SIP/2.0/UDP 10.0.1.1:5060;branch=z9hG4bKnode2\nMax-Forwards: 70", 1))
	out := buildRequest(in, &outSpec{
		via:       newVia(p.listenerFor("UDP"), "UDP", p.br.branch(in, "BYE", 0)),
		hideVias:  true,
		maxFwd:    69,
		transport: "UDP",
		dest:      "192.0.2.10:5060",
	})
	vias := out.GetHeaders("Via")
	require.Len(t, vias, 1)
	require.Contains(t, vias[0].Value(), "10.0.0.1:5060")
	require.NotContains(t, out.String(), "192.0.2.10:5060;branch=z9hG4bK776asdhds")

	res := sip.NewResponseFromRequest(out, 200, "OK", nil)
	up := upstreamResponse(res, "192.0.2.10:5060", inboundVias(in)...)
	got := up.GetHeaders("Via")
	require.Len(t, got, 2)
	require.Contains(t, got[0].Value(), "branch=z9hG4bK776asdhds")
	require.Contains(t, got[1].Value(), "branch=z9hG4bKnode2")

	c := &sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: "mod_sofia", Host: "10.0.1.1", Port: 5060}}
	h := p.hiddenContact(c, "UDP")
	require.Equal(t, "<sip:mod_sofia@10.0.0.1:5060;transport=udp;sbh>", h.Value())
}

func TestDeltaQuantile(t *testing.T) {
	buckets := []float64{0, 0.001, 0.01, 0.1, 1}
	prev := []uint64{0, 0, 0, 0}
	tests := []struct {
		name      string
		cur, prev []uint64
		q         float64
		want      float64
		ok        bool
	}{
		{"no observations", prev, prev, 0.99, 0, false},
		// 98 fast (under 1 ms), 2 slow (10-100 ms): p99 is in the slow bucket.
		{"p99 slow", []uint64{98, 0, 2, 0}, prev, 0.99, 0.1, true},
		{"median fast", []uint64{98, 0, 2, 0}, prev, 0.5, 0.001, true},
		// Only the difference counts: the slow ones were before.
		{"difference only", []uint64{198, 0, 2, 0}, []uint64{98, 0, 2, 0}, 0.99, 0.001, true},
		{"nothing new", []uint64{98, 0, 2, 0}, []uint64{98, 0, 2, 0}, 0.99, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := deltaQuantile(tt.cur, tt.prev, buckets, tt.q)
			require.Equal(t, tt.ok, ok)
			require.Equal(t, tt.want, got)
		})
	}
}

func TestOverloadGate(t *testing.T) {
	const limit = 0.050
	hot, warm, calm := 0.060, 0.040, 0.010
	tests := []struct {
		name    string
		samples []float64
		limit   float64
		want    []bool // shedding after each sample
	}{
		{"one spike is not overload", []float64{hot, calm, hot, hot, calm}, limit,
			[]bool{false, false, false, false, false}},
		{"sustained overload sheds", []float64{hot, hot, hot, hot}, limit,
			[]bool{false, false, true, true}},
		// Between half the limit and the limit: neither calm nor hot.
		{"warm keeps shedding", append([]float64{hot, hot, hot}, repeatSample(warm, 12)...), limit,
			append([]bool{false, false, true}, repeatBool(true, 12)...)},
		{"a calm second ends it", append([]float64{hot, hot, hot}, repeatSample(calm, 10)...), limit,
			append(append([]bool{false, false, true}, repeatBool(true, 9)...), false)},
		// A warm sample restarts the count of calm ones.
		{"calm must be unbroken", append(append([]float64{hot, hot, hot}, repeatSample(calm, 9)...), warm, calm), limit,
			append([]bool{false, false, true}, repeatBool(true, 11)...)},
		{"off never sheds", []float64{hot, hot, hot, hot}, 0,
			[]bool{false, false, false, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var g gate
			got := make([]bool, 0, len(tt.samples))
			for _, s := range tt.samples {
				was := g.shedding
				changed := g.step(s, tt.limit)
				require.Equal(t, was != g.shedding, changed)
				got = append(got, g.shedding)
			}
			require.Equal(t, tt.want, got)
		})
	}
}

func repeatSample(v float64, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v
	}
	return out
}

func repeatBool(v bool, n int) []bool {
	out := make([]bool, n)
	for i := range out {
		out[i] = v
	}
	return out
}
