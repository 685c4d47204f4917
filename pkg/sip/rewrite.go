package sip

import (
	"net"
	"strconv"

	"github.com/emiago/sipgo/sip"
)

// Building outbound messages from inbound ones (httputil's In/Out rule): the
// inbound message is never modified. The outbound copy shares every header
// value that does not change — sipgo's header values are pointers and
// nothing in the send path writes to them — and gets fresh values for what
// does:
//
//   - our Via on top (new), and the previous hop's Via replaced by a copy
//     with received/rport when the packet's source differs from its sent-by
//     (§18.2.1, RFC 3581);
//   - our own Route entries removed (loose routing, §16.4), and with strict
//     routing the last Route moved into the Request-URI;
//   - Max-Forwards replaced (never Dec(): sipgo's Clone shares that pointer);
//   - our Record-Route entries prepended to the Record-Route list.
//
// Headers never stripped or added beyond these: the balancer is transparent
// to everything else (Contact, SDP, P-Asserted-Identity...).

// outSpec says how to build an outbound request.
type outSpec struct {
	via        *sip.ViaHeader
	prevVia    *sip.ViaHeader // replacement for the inbound top Via, or nil
	hideVias   bool           // drop every inbound Via (topology hiding)
	dropRoutes int            // top Route entries to remove
	dropLast   bool           // strict routing: remove the last Route
	recipient  *sip.Uri       // new Request-URI (strict routing), or nil
	maxFwd     uint32
	rr         []sip.Header // Record-Route entries to prepend
	transport  string
	dest       string
	laddr      sip.Addr
}

func buildRequest(in *sip.Request, o *outSpec) *sip.Request {
	recipient := in.Recipient
	if o.recipient != nil {
		recipient = *o.recipient
	}
	out := sip.NewRequest(in.Method, recipient)
	out.SipVersion = in.SipVersion
	out.AppendHeader(o.via)

	hdrs := in.Headers()
	routesTotal := 0
	if o.dropLast {
		for _, h := range hdrs {
			if _, ok := h.(*sip.RouteHeader); ok {
				routesTotal++
			}
		}
	}
	mf := sip.MaxForwardsHeader(o.maxFwd)
	seenVia, seenMF, rrDone := false, false, len(o.rr) == 0
	routeIdx := 0
	for _, h := range hdrs {
		switch v := h.(type) {
		case *sip.ViaHeader:
			if o.hideVias {
				continue
			}
			if !seenVia {
				seenVia = true
				if o.prevVia != nil {
					out.AppendHeader(o.prevVia)
					continue
				}
			}
			out.AppendHeader(v)
		case *sip.RouteHeader:
			i := routeIdx
			routeIdx++
			if i < o.dropRoutes {
				continue
			}
			if o.dropLast && i == routesTotal-1 {
				continue
			}
			out.AppendHeader(v)
		case *sip.MaxForwardsHeader:
			if !seenMF {
				seenMF = true
				out.AppendHeader(&mf)
			}
		case *sip.RecordRouteHeader:
			if !rrDone {
				rrDone = true
				for _, r := range o.rr {
					out.AppendHeader(r)
				}
			}
			out.AppendHeader(v)
		default:
			out.AppendHeader(h)
		}
	}
	if !seenMF {
		out.AppendHeader(&mf)
	}
	if !rrDone {
		for _, r := range o.rr {
			out.AppendHeader(r)
		}
	}
	out.SetBody(in.Body())
	out.SetTransport(o.transport)
	out.SetDestination(o.dest)
	out.Laddr = o.laddr
	return out
}

// newVia returns our Via for a request sent over l.
func newVia(l *listener, transport, branch string) *sip.ViaHeader {
	return &sip.ViaHeader{
		ProtocolName:    "SIP",
		ProtocolVersion: "2.0",
		Transport:       transport,
		Host:            l.viaHost,
		Port:            l.viaPort,
		Params:          sip.HeaderParams{{K: "branch", V: branch}, {K: "rport"}},
	}
}

// receivedVia returns a copy of the inbound top Via with received and
// rport filled in when needed (§18.2.1, RFC 3581), or nil when the Via can
// be forwarded as it is. For reliable transports rport is always filled so
// that a response can find the connection by its source address.
func receivedVia(in *sip.Request) *sip.ViaHeader {
	v := in.Via()
	if v == nil {
		return nil
	}
	srcHost, srcPort, err := net.SplitHostPort(in.Source())
	if err != nil {
		return nil
	}
	rport, hasRport := v.Params.Get("rport")
	needReceived := v.Host != srcHost
	needRport := (hasRport && rport == "") || (sip.IsReliable(in.Transport()) && !hasRport)
	if !needReceived && !needRport {
		return nil
	}
	c := v.Clone()
	if needReceived {
		c.Params.Add("received", srcHost)
	}
	if needRport {
		c.Params.Add("rport", srcPort)
	}
	return c
}

// responseDest is where responses to in go: the source address for rport
// or reliable transports, else the source IP with the Via's port (§18.2.2).
func responseDest(in *sip.Request) string {
	src := in.Source()
	v := in.Via()
	if v == nil || sip.IsReliable(in.Transport()) {
		return src
	}
	if _, ok := v.Params.Get("rport"); ok {
		return src
	}
	host, _, err := net.SplitHostPort(src)
	if err != nil {
		return src
	}
	port := v.Port
	if port == 0 {
		port = sip.DefaultPort(v.Transport)
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// viaDest is where a response goes according to a Via (received/rport
// honoured), for stateless forwarding.
func viaDest(v *sip.ViaHeader) string {
	host := v.Host
	port := v.Port
	if r, ok := v.Params.Get("received"); ok && r != "" {
		host = r
	}
	if rp, ok := v.Params.Get("rport"); ok && rp != "" {
		if n, err := strconv.Atoi(rp); err == nil {
			port = n
		}
	}
	if port == 0 {
		port = sip.DefaultPort(v.Transport)
	}
	return net.JoinHostPort(host, strconv.Itoa(port))
}

// upstreamResponse copies res without its top Via (ours), for sending to
// the previous hop. Header values are shared, not copied. restore, when
// set, are the previous hops' Vias that topology hiding removed from the
// request: they take the place of ours.
func upstreamResponse(res *sip.Response, dest string, restore ...*sip.ViaHeader) *sip.Response {
	out := sip.NewResponse(res.StatusCode, res.Reason)
	out.SipVersion = res.SipVersion
	skipped := false
	for _, h := range res.Headers() {
		if !skipped {
			if _, ok := h.(*sip.ViaHeader); ok {
				skipped = true
				for _, v := range restore {
					out.AppendHeader(v)
				}
				continue
			}
		}
		out.AppendHeader(h)
	}
	out.SetBody(res.Body())
	out.SetDestination(dest)
	return out
}

// withStatus returns a copy of res with another status line, sharing
// headers (used to turn a 503 into a 500, §16.7 step 6).
func withStatus(res *sip.Response, code int, reason string) *sip.Response {
	out := sip.NewResponse(code, reason)
	out.SipVersion = res.SipVersion
	for _, h := range res.Headers() {
		out.AppendHeader(h)
	}
	out.SetBody(res.Body())
	out.SetDestination(res.Destination())
	out.SetTransport(res.Transport())
	return out
}

func tagOf(params sip.HeaderParams) string {
	t, _ := params.Get("tag")
	return t
}
