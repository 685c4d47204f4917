package sip

import (
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Topology hiding (security.hide_topology): carriers never see a node's
// address in SIP. What changes, and only on messages toward carriers:
//
//   - Contact of a node (in its 18x/2xx answers to carriers' requests, and
//     in its requests toward carriers) becomes the balancer's advertised
//     address with the same user part and the marker parameter sbh. A
//     request that comes back with such a Request-URI goes to the node the
//     Record-Route token names, with the Request-URI set to the node's
//     configured address (user part kept): FreeSWITCH matches dialogs by
//     Call-ID and tags.
//   - The Vias of a request a node sends toward a carrier are removed
//     (ours is the only one the carrier sees) and put back on the answers
//     before they go to the node.
//
// What does not change: Record-Route (it names the balancer already), and
// the SDP, whose addresses are the node's media addresses — hiding those
// needs an RTP proxy.
const hideParam = "sbh"

// hiddenContact returns a Contact that stands for c at the balancer.
func (p *Proxy) hiddenContact(c *sip.ContactHeader, transport string) *sip.ContactHeader {
	l := p.listenerFor(transport)
	out := &sip.ContactHeader{
		Address: sip.Uri{
			Scheme: "sip",
			User:   c.Address.User,
			Host:   l.advHost,
			Port:   l.advPort,
			UriParams: sip.HeaderParams{
				{K: "transport", V: strings.ToLower(l.transport)},
				{K: hideParam},
			},
		},
	}
	if len(c.Params) > 0 {
		out.Params = c.Params.Clone()
	}
	return out
}

// hideContact replaces msg's Contact (if any) with one at the balancer.
// msg is an outbound copy: only its own header list changes.
func (p *Proxy) hideContact(msg interface {
	Contact() *sip.ContactHeader
	ReplaceHeader(sip.Header)
}, transport string) {
	if c := msg.Contact(); c != nil && !c.Address.Wildcard {
		msg.ReplaceHeader(p.hiddenContact(c, transport))
	}
}

// unhideTarget returns the Request-URI for a request toward node dest when
// the carrier addressed a Contact we hid, or nil.
func (p *Proxy) unhideTarget(req *sip.Request, dest, transport string) *sip.Uri {
	u := &req.Recipient
	if !u.UriParams.Has(hideParam) || !p.self.has(u.Host, u.Port, u.Scheme == "sips") {
		return nil
	}
	host, port, err := net.SplitHostPort(dest)
	if err != nil {
		return nil
	}
	n, _ := strconv.Atoi(port)
	out := &sip.Uri{Scheme: "sip", User: u.User, Host: host, Port: n}
	if transport != "UDP" {
		out.UriParams = sip.HeaderParams{{K: "transport", V: strings.ToLower(transport)}}
	}
	return out
}

// inboundVias returns the Vias of in, top first.
func inboundVias(in *sip.Request) []*sip.ViaHeader {
	var out []*sip.ViaHeader
	for _, h := range in.Headers() {
		if v, ok := h.(*sip.ViaHeader); ok {
			out = append(out, v)
		}
	}
	return out
}
