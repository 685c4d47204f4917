package sip

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// rejection is a response the guards want sent instead of forwarding.
type rejection struct {
	code   int
	reason string
	// extra headers, e.g. Unsupported for 420
	hdrs []sip.Header
	// why, for logs and metrics: a short stable label
	label string
}

// defaultMaxForwards is used when a request carries none (RFC 3261 §16.6 step 3).
const defaultMaxForwards = 70

// checkRequest runs the §16.3 request validation steps that do not depend on
// routing: syntax we can see after sipgo's parser (required headers,
// duplicated single-value headers, CSeq method, version), Proxy-Require and
// Max-Forwards. It returns the Max-Forwards value to send on (already
// decremented) or a rejection. maxFwdZeroOK is true when the request is for
// us to answer (then Max-Forwards 0 is not an error).
func checkRequest(req *sip.Request) (mf uint32, rej *rejection) {
	if req.SipVersion != "SIP/2.0" {
		return 0, &rejection{code: 505, reason: "Version Not Supported", label: "version"}
	}
	if req.From() == nil || req.To() == nil || req.CallID() == nil || req.CSeq() == nil || req.Via() == nil {
		return 0, &rejection{code: 400, reason: "Missing Required Header", label: "malformed"}
	}
	if len(*req.CallID()) == 0 {
		return 0, &rejection{code: 400, reason: "Empty Call-ID", label: "malformed"}
	}
	cseq := req.CSeq()
	if cseq.MethodName != req.Method {
		return 0, &rejection{code: 400, reason: "CSeq Method Mismatch", label: "malformed"}
	}
	switch req.Recipient.Scheme {
	case "sip", "sips":
		if req.Recipient.Host == "" {
			return 0, &rejection{code: 400, reason: "Bad Request-URI", label: "malformed"}
		}
	case "tel":
		if req.Recipient.Raw() == "" && req.Recipient.User == "" && req.Recipient.Host == "" {
			return 0, &rejection{code: 400, reason: "Bad Request-URI", label: "malformed"}
		}
	default:
		return 0, &rejection{code: 416, reason: "Unsupported URI Scheme", label: "uri_scheme"}
	}
	// sipgo keeps every copy of a duplicated single-value header on the
	// wire while its accessors return the last one; elements downstream may
	// read the first. Refuse rather than forward an ambiguous message.
	var from, to, callID, cs, mfCount, cl int
	var unsupported []string
	for _, h := range req.Headers() {
		switch v := h.(type) {
		case *sip.ViaHeader:
			// sipgo's parser lets through Via values it cannot write back
			// in a form it would read again; we forward Vias, so refuse them.
			if v.ProtocolName != "SIP" || v.ProtocolVersion != "2.0" || v.Transport == "" || v.Host == "" {
				return 0, &rejection{code: 400, reason: "Bad Via", label: "malformed"}
			}
		case *sip.RouteHeader:
			if !sipURIOK(&v.Address) {
				return 0, &rejection{code: 400, reason: "Bad Route", label: "malformed"}
			}
		case *sip.FromHeader:
			from++
			if !addrURIOK(&v.Address) {
				return 0, &rejection{code: 400, reason: "Bad From", label: "malformed"}
			}
		case *sip.ToHeader:
			to++
			if !addrURIOK(&v.Address) {
				return 0, &rejection{code: 400, reason: "Bad To", label: "malformed"}
			}
		case *sip.CallIDHeader:
			callID++
		case *sip.CSeqHeader:
			cs++
		case *sip.MaxForwardsHeader:
			mfCount++
		case *sip.ContentLengthHeader:
			cl++
		default:
			if strings.EqualFold(h.Name(), "Proxy-Require") {
				unsupported = append(unsupported, h.Value())
			}
		}
	}
	if from > 1 || to > 1 || callID > 1 || cs > 1 || mfCount > 1 || cl > 1 {
		return 0, &rejection{code: 400, reason: "Duplicate Header", label: "malformed"}
	}
	if len(unsupported) > 0 && req.Method != sip.ACK && req.Method != sip.CANCEL {
		return 0, &rejection{
			code: 420, reason: "Bad Extension", label: "bad_extension",
			hdrs: []sip.Header{sip.NewHeader("Unsupported", strings.Join(unsupported, ", "))},
		}
	}
	mf = defaultMaxForwards
	if h := req.MaxForwards(); h != nil {
		mf = h.Val()
	}
	if mf == 0 {
		return 0, &rejection{code: 483, reason: "Too Many Hops", label: "max_forwards"}
	}
	return mf - 1, nil
}

// looped reports whether req carries a Via of ours whose loop hash equals
// the request's own: it has been here before with nothing that matters
// changed (§16.3 step 4).
func (p *Proxy) looped(req *sip.Request) bool {
	var hash string
	for _, h := range req.Headers() {
		v, ok := h.(*sip.ViaHeader)
		if !ok {
			continue
		}
		b, _ := v.Params.Get("branch")
		loop, ours := isOurBranch(b)
		if !ours || !p.self.has(v.Host, v.Port, v.Transport == "TLS") {
			continue
		}
		if hash == "" {
			hash = loopHashString(req)
		}
		if loop == hash {
			return true
		}
	}
	return false
}

// sipURIOK: a sip: or sips: URI with a host (Route entries).
func sipURIOK(u *sip.Uri) bool {
	return (u.Scheme == "sip" || u.Scheme == "sips") && u.Host != ""
}

// addrURIOK: what From and To may hold: a SIP URI with a host, or a tel:
// URI.
func addrURIOK(u *sip.Uri) bool {
	switch u.Scheme {
	case "sip", "sips":
		return u.Host != ""
	case "tel":
		return u.Raw() != "" || u.User != "" || u.Host != ""
	}
	return false
}
