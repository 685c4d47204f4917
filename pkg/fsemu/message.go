package fsemu

import (
	"net"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Header values copied from a FreeSWITCH 1.11 external profile's replies
// (shared/esl-real-transcripts.md).
const (
	allowValue       = "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, INFO, UPDATE, REGISTER, REFER, NOTIFY"
	supportedValue   = "timer, path, replaces"
	supportedOptions = "path, replaces"
	allowEventsValue = "talk, hold, conference, refer"
	retryAfterValue  = "300"
	reasonMaxCalls   = "Maximum Calls In Progress"
	reasonNoDialog   = "Call/Transaction Does Not Exist"
)

// response builds a reply to req carrying the headers mod_sofia puts on
// its replies. sipgo's NewResponseFromRequest copies Via, From, To, Call-ID
// and CSeq, adds a To tag to everything but 100 (req's own tag when it has
// one), and copies Record-Route for 18x and 2xx to an INVITE.
func (n *Node) response(req *sip.Request, code int, reason string) *sip.Response {
	res := sip.NewResponseFromRequest(req, code, reason, nil)
	res.AppendHeader(sip.NewHeader("User-Agent", n.cfg.UserAgent))
	if code == 100 {
		return res
	}
	if to := res.To(); to != nil && !hasToTag(req) {
		// sofia-sip style tag instead of sipgo's UUID.
		to.Params.Add("tag", newTag())
	}
	if code == 503 {
		res.AppendHeader(sip.NewHeader("Retry-After", retryAfterValue))
	}
	supported := supportedValue
	if req.Method == sip.OPTIONS {
		supported = supportedOptions
	}
	res.AppendHeader(sip.NewHeader("Allow", allowValue))
	res.AppendHeader(sip.NewHeader("Supported", supported))
	res.AppendHeader(sip.NewHeader("Allow-Events", allowEventsValue))
	return res
}

// dialogResponse is a 18x/2xx to a dialog-creating or target-refreshing
// request: it carries the node's Contact, and an SDP answer when sdp is set.
func (n *Node) dialogResponse(req *sip.Request, code int, reason string, sdp []byte) *sip.Response {
	res := n.response(req, code, reason)
	res.AppendHeader(n.contact(req.Transport(), "mod_sofia"))
	res.AppendHeader(sip.NewHeader("Accept", "application/sdp"))
	if sdp != nil {
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.AppendHeader(sip.NewHeader("Content-Disposition", "session"))
		res.SetBody(sdp)
	}
	return res
}

// contact is the node's Contact: <sip:user@host:port>, with ;transport=tcp
// when the request came over TCP so in-dialog requests stay on it.
func (n *Node) contact(transport, user string) *sip.ContactHeader {
	uri := sip.Uri{Scheme: "sip", User: user, Host: n.host, Port: n.port}
	if t := strings.ToLower(transport); t != "" && t != "udp" {
		uri.UriParams = sip.HeaderParams{{K: "transport", V: t}}
	}
	return &sip.ContactHeader{Address: uri}
}

// newTag returns a To/From tag shaped like sofia-sip's (13 alphanumerics).
func newTag() string { return sip.GenerateTagN(13) }

// sdpAnswer is a small FreeSWITCH-like SDP answer: PCMU, PCMA and
// telephone-event on one audio stream.
func (n *Node) sdpAnswer(session, version uint64, rtpPort int) []byte {
	ipv := "IP4"
	if ip := net.ParseIP(n.host); ip != nil && ip.To4() == nil {
		ipv = "IP6"
	}
	addr := "IN " + ipv + " " + n.host
	port := strconv.Itoa(rtpPort)
	var b strings.Builder
	b.Grow(320)
	b.WriteString("v=0\r\n")
	b.WriteString("o=FreeSWITCH " + strconv.FormatUint(session, 10) + " " + strconv.FormatUint(version, 10) + " " + addr + "\r\n")
	b.WriteString("s=FreeSWITCH\r\n")
	b.WriteString("c=" + addr + "\r\n")
	b.WriteString("t=0 0\r\n")
	b.WriteString("m=audio " + port + " RTP/AVP 0 8 101\r\n")
	b.WriteString("a=rtpmap:0 PCMU/8000\r\n")
	b.WriteString("a=rtpmap:8 PCMA/8000\r\n")
	b.WriteString("a=rtpmap:101 telephone-event/8000\r\n")
	b.WriteString("a=fmtp:101 0-16\r\n")
	b.WriteString("a=ptime:20\r\n")
	b.WriteString("a=sendrecv\r\n")
	b.WriteString("a=rtcp:" + strconv.Itoa(rtpPort+1) + " " + addr + "\r\n")
	return []byte(b.String())
}

// RTP ports are handed out round-robin from FreeSWITCH's default range.
const (
	rtpPortMin = 16384
	rtpPortMax = 32768
)

func (n *Node) nextRTPPort() int {
	k := n.rtpSeq.Add(1)
	return rtpPortMin + int((2*k)%uint64(rtpPortMax-rtpPortMin))
}

// byeLocked builds the node's BYE for an established dialog, as a UAS
// sends it (RFC 3261 12.2.1.1): Request-URI = the caller's Contact, Route =
// the INVITE's Record-Route top first, CSeq from the node's own sequence,
// From = the node's side with its tag, To = the caller's side. The request
// goes to the first Route when it is a loose router (lr), else to the
// remote target; a strict first hop gets the RFC's strict-routing form.
func (c *call) byeLocked() *sip.Request {
	target := *c.remoteTarget.Clone()
	next := target
	var routes []sip.Uri
	if len(c.routeSet) > 0 {
		first := c.routeSet[0]
		next = first
		if first.UriParams.Has("lr") {
			routes = c.routeSet
		} else {
			target = *first.Clone()
			target.Headers = nil
			routes = append(append([]sip.Uri(nil), c.routeSet[1:]...), *c.remoteTarget.Clone())
		}
	}
	bye := sip.NewRequest(sip.BYE, target)
	maxFwd := sip.MaxForwardsHeader(70)
	bye.AppendHeader(&maxFwd)
	for _, r := range routes {
		bye.AppendHeader(&sip.RouteHeader{Address: *r.Clone()})
	}
	from := sip.FromHeader{DisplayName: c.local.DisplayName, Address: *c.local.Address.Clone(), Params: c.local.Params.Clone()}
	to := sip.ToHeader{DisplayName: c.remote.DisplayName, Address: *c.remote.Address.Clone(), Params: c.remote.Params.Clone()}
	bye.AppendHeader(&from)
	bye.AppendHeader(&to)
	callID := sip.CallIDHeader(c.id)
	bye.AppendHeader(&callID)
	c.localCSeq++
	bye.AppendHeader(&sip.CSeqHeader{SeqNo: c.localCSeq, MethodName: sip.BYE})
	bye.AppendHeader(sip.NewHeader("User-Agent", c.n.cfg.UserAgent))
	bye.AppendHeader(sip.NewHeader("Allow", allowValue))
	bye.AppendHeader(sip.NewHeader("Supported", supportedValue))
	bye.AppendHeader(sip.NewHeader("Reason", "Q.850;cause=16;text=\"NORMAL_CLEARING\""))
	bye.SetBody(nil)

	transport := c.transport
	if t, ok := next.UriParams.Get("transport"); ok && t != "" {
		transport = t
	}
	transport = strings.ToUpper(transport)
	port := next.Port
	if port == 0 {
		port = sip.DefaultPort(transport)
	}
	bye.SetTransport(transport)
	bye.SetDestination(net.JoinHostPort(strings.Trim(next.Host, "[]"), strconv.Itoa(port)))
	return bye
}
