package sip

import (
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"

	"github.com/sipbalancer/sipbalancer/pkg/session"
)

// FuzzProxyRequest feeds arbitrary bytes through everything the proxy does
// with an inbound request before it is sent: sipgo's parser, our guards,
// loop detection, Route analysis and token verification, dialog
// resolution, and the outbound copy, which must serialise into something
// sipgo parses again. Nothing may panic. Seeds are in f.Add below and in
// testdata/fuzz/FuzzProxyRequest; plain `go test` replays both.
func FuzzProxyRequest(f *testing.F) {
	p := testProxy(f)
	tok := p.signer.Sign(session.Token{NodeID: "fs1"}, "c1@x", "caller")
	for _, s := range []string{
		inviteRaw,
		strings.Replace(inviteRaw, "Call-ID:", "Route: <sip:10.0.0.1:5060;lr>\nRoute: <sip:next.example.com;lr>\nCall-ID:", 1),
		"BYE sip:mod_sofia@10.0.1.1:5060 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKx\nMax-Forwards: 1\n" +
			"Route: <sip:10.0.0.1:5060;lr;sbt=" + tok + ">\nTo: <sip:a@b>;tag=node\nFrom: <sip:c@d>;tag=caller\n" +
			"Call-ID: c1@x\nCSeq: 2 BYE\nContent-Length: 0\n\n",
		"ACK sip:10.0.0.1:5060;sbt=" + tok + " SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10;branch=z9hG4bKy\n" +
			"Route: <sip:mod_sofia@10.0.1.1>\nTo: <sip:a@b>;tag=node\nFrom: <sip:c@d>;tag=caller\n" +
			"Call-ID: c1@x\nCSeq: 2 ACK\nContent-Length: 0\n\n",
		"OPTIONS sip:10.0.0.1 SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bKsb0123456789abcdefx01234567\nMax-Forwards: 0\nTo: <sip:a@b>\nFrom: <sip:c@d>;tag=1\nCall-ID: o\nCSeq: 1 OPTIONS\n\n",
	} {
		f.Add([]byte(strings.ReplaceAll(strings.TrimLeft(s, "\n"), "\n", "\r\n")))
	}
	parser := sip.NewParser()
	f.Fuzz(func(t *testing.T, data []byte) {
		msg, err := parser.ParseSIP(data)
		if err != nil {
			return
		}
		req, ok := msg.(*sip.Request)
		if !ok {
			return
		}
		req.SetSource("192.0.2.10:5060")
		req.SetTransport("UDP")
		mf, rej := checkRequest(req)
		if rej != nil {
			if rej.code < 400 || rej.code > 599 {
				t.Fatalf("bad rejection code %d", rej.code)
			}
			return
		}
		p.looped(req)
		r := p.route(req)
		spec := outSpec{
			via:        newVia(p.listenerFor("UDP"), "UDP", p.br.branch(req, string(req.Method), 0)),
			prevVia:    receivedVia(req),
			dropRoutes: r.ours,
			maxFwd:     mf,
			transport:  "UDP",
			dest:       "10.0.1.1:5060",
		}
		if tagOf(req.To().Params) != "" {
			if dt, err := p.resolveDialog(req, &r); err == nil {
				spec.dest, spec.transport = dt.dest, dt.transport
				spec.recipient, spec.dropLast = dt.recipient, dt.dropLast
			}
		}
		out := buildRequest(req, &spec)
		if _, err := parser.ParseSIP([]byte(out.String())); err != nil {
			t.Fatalf("outbound copy does not parse: %v\n%s", err, out.String())
		}
	})
}
