package sip

import (
	"github.com/emiago/sipgo/sip"
)

var allowHdr = sip.NewHeader("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, PRACK, REFER, NOTIFY, MESSAGE, SUBSCRIBE")

// answerOptions answers an OPTIONS addressed to the balancer itself.
// Carriers ping their trunks with it and move traffic away on failure, so
// the answer says whether the pool behind us can take calls: 200 while at
// least one node accepts new calls, 503 when none does (or we are
// draining).
func (p *Proxy) answerOptions(req *sip.Request, tx sip.ServerTransaction) {
	if p.draining.Load() || !p.disp.AnyAvailable() {
		p.respond(req, tx, 503, "Service Unavailable", p.retryAfter)
		return
	}
	p.respond(req, tx, 200, "OK", allowHdr)
}
