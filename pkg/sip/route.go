package sip

import (
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
	"github.com/sipbalancer/sipbalancer/pkg/session"
)

// tokenParam is the Record-Route URI parameter holding the signed token.
const tokenParam = "sbt"

// routing is what loose routing (§16.4) found in a request.
type routing struct {
	// ours is how many Route entries at the top are ours.
	ours int
	// token is the first verified token found in our entries.
	token    session.Token
	hasToken bool
	// sameDir is true when the request travels in the direction of the
	// dialog-creating request (its From tag is the one the token was
	// signed with); false when it travels back.
	sameDir bool
	// next is the first Route that is not ours, or nil.
	next *sip.Uri
	// strict: the previous hop used strict routing and put our URI in the
	// Request-URI; the real target is the last Route (§16.4).
	strict     bool
	strictNext *sip.Uri
}

// verifyToken checks a token value against the request's Call-ID and tags.
func (p *Proxy) verifyToken(val string, req *sip.Request) (session.Token, bool, bool) {
	callID := string(*req.CallID())
	if t, err := p.signer.Verify(val, callID, tagOf(req.From().Params)); err == nil {
		return t, true, true
	}
	if to := tagOf(req.To().Params); to != "" {
		if t, err := p.signer.Verify(val, callID, to); err == nil {
			return t, false, true
		}
	}
	return session.Token{}, false, false
}

// isOurURI reports whether u addresses this balancer: one of our addresses,
// or a URI carrying a token our secret signed (an instance sharing the VIP).
func (p *Proxy) isOurURI(u *sip.Uri, req *sip.Request) (tok session.Token, sameDir, verified, ours bool) {
	if v, ok := u.UriParams.Get(tokenParam); ok {
		if t, same, ok := p.verifyToken(v, req); ok {
			return t, same, true, true
		}
	}
	secure := u.Scheme == "sips"
	if tp, ok := u.UriParams.Get("transport"); ok && strings.EqualFold(tp, "tls") {
		secure = true
	}
	return session.Token{}, false, false, p.self.has(u.Host, u.Port, secure)
}

// route applies §16.4 to req: which top Route entries are ours, the token
// they carry, and what comes next.
func (p *Proxy) route(req *sip.Request) routing {
	var r routing
	// Strict routing: the Request-URI is a URI we record-routed.
	if _, ok := req.Recipient.UriParams.Get(tokenParam); ok {
		if t, same, verified, ours := p.isOurURI(&req.Recipient, req); ours {
			r.strict = true
			if verified {
				r.token, r.sameDir, r.hasToken = t, same, true
			}
		}
	}
	var last *sip.RouteHeader
	inPrefix := true
	for _, h := range req.Headers() {
		rh, ok := h.(*sip.RouteHeader)
		if !ok {
			continue
		}
		last = rh
		if !inPrefix {
			continue
		}
		t, same, verified, ours := p.isOurURI(&rh.Address, req)
		if !ours {
			inPrefix = false
			r.next = &rh.Address
			continue
		}
		r.ours++
		if verified && !r.hasToken {
			r.token, r.sameDir, r.hasToken = t, same, true
		}
	}
	if r.strict && last != nil {
		r.strictNext = &last.Address
		if r.next == &last.Address {
			r.next = nil
		}
	}
	return r
}

// uriTarget turns a URI into a destination host:port and transport.
func uriTarget(u *sip.Uri) (dest, transport string) {
	transport = "UDP"
	if u.Scheme == "sips" {
		transport = "TLS"
	}
	if tp, ok := u.UriParams.Get("transport"); ok {
		transport = strings.ToUpper(tp)
	}
	port := u.Port
	if port == 0 {
		port = sip.DefaultPort(transport)
	}
	return net.JoinHostPort(strings.Trim(u.Host, "[]"), strconv.Itoa(port)), transport
}

// recordRoute builds our Record-Route entries for a request arriving on
// inTransport and leaving on outTransport, carrying token. When the two
// sides use different listeners both are recorded (RFC 5658): the entry
// facing the next hop first.
func (p *Proxy) recordRoute(inTransport, outTransport, token string) []sip.Header {
	outL := p.listenerFor(outTransport)
	inL := p.listenerFor(inTransport)
	rr := []sip.Header{p.rrEntry(outL, token)}
	if inL != outL && (inL.advHost != outL.advHost || inL.advPort != outL.advPort || inL.transport != outL.transport) {
		rr = append(rr, p.rrEntry(inL, token))
	}
	return rr
}

func (p *Proxy) rrEntry(l *listener, token string) *sip.RecordRouteHeader {
	return &sip.RecordRouteHeader{Address: sip.Uri{
		Scheme: "sip",
		Host:   l.advHost,
		Port:   l.advPort,
		UriParams: sip.HeaderParams{
			{K: "transport", V: strings.ToLower(l.transport)},
			{K: "lr"},
			{K: tokenParam, V: token},
		},
	}}
}

// nodeTarget is where a request to node n goes.
func (p *Proxy) nodeTarget(n *dispatcher.Node) (dest, transport string) {
	return n.Dest(), n.Spec.Transport
}
