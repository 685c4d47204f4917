package callgen

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/emiago/sipgo/sip"
)

// ErrRemoteBye is returned by Dialog.Bye when the far end already hung up.
var ErrRemoteBye = errors.New("callgen: dialog already ended by the far end's BYE")

// Dialog is the UAC side of a confirmed INVITE dialog (RFC 3261 12.1.2).
type Dialog struct {
	u         *UAC
	callID    string
	local     *sip.FromHeader // our URI and tag
	remote    *sip.ToHeader   // the far end's URI and tag
	localTag  string
	remoteTag string
	routeSet  []sip.Uri // Record-Route of the 2xx, reversed; fixed for the dialog
	transport string    // default transport when a hop names none
	sdp       []byte    // our session description, re-offered unchanged

	mu           sync.Mutex
	localSeq     uint32
	remoteSeq    uint32
	remoteTarget sip.Uri
	nextHop      string                   // overrides the route set's first hop (SetNextHop)
	acks         map[uint32]*ackState     // ACKs we sent, by INVITE CSeq
	awaitAck     map[uint32]chan struct{} // our 2xx to their re-INVITE, by CSeq

	byeOnce   sync.Once
	remoteBye chan struct{}
}

// newDialog builds the dialog state from a 2xx to an INVITE: Call-ID, tags
// and CSeq from the response, remote target from its Contact (fallback when
// it has none, reported as an error), route set from its Record-Route list
// in reverse order. It returns nil only when the response cannot identify a
// dialog at all.
func newDialog(u *UAC, res *sip.Response, fallback sip.Uri, transport string) (*Dialog, error) {
	if res.CallID() == nil || res.From() == nil || res.To() == nil || res.CSeq() == nil {
		return nil, errors.New("callgen: 2xx lacks Call-ID, From, To or CSeq")
	}
	d := &Dialog{
		u:         u,
		callID:    res.CallID().Value(),
		local:     sip.HeaderClone(res.From()).(*sip.FromHeader),
		remote:    sip.HeaderClone(res.To()).(*sip.ToHeader),
		transport: transport,
		localSeq:  res.CSeq().SeqNo,
		acks:      make(map[uint32]*ackState),
		awaitAck:  make(map[uint32]chan struct{}),
		remoteBye: make(chan struct{}),
	}
	d.localTag = fromTag(d.local)
	d.remoteTag = toTag(d.remote)
	var errs []error
	if d.remoteTag == "" {
		errs = append(errs, fmt.Errorf("callgen: %d response has no To tag", res.StatusCode))
	}
	if c := res.Contact(); c != nil {
		d.remoteTarget = *c.Address.Clone()
	} else {
		d.remoteTarget = *fallback.Clone()
		errs = append(errs, fmt.Errorf("callgen: %d response has no Contact", res.StatusCode))
	}
	rr := res.GetHeaders("Record-Route")
	for i := len(rr) - 1; i >= 0; i-- {
		uri, err := routeURI(rr[i])
		if err != nil {
			errs = append(errs, fmt.Errorf("callgen: Record-Route %q: %w", rr[i].Value(), err))
			continue
		}
		d.routeSet = append(d.routeSet, uri)
	}
	return d, errors.Join(errs...)
}

func routeURI(h sip.Header) (sip.Uri, error) {
	switch v := h.(type) {
	case *sip.RecordRouteHeader:
		return *v.Address.Clone(), nil
	case *sip.RouteHeader:
		return *v.Address.Clone(), nil
	}
	var uri sip.Uri
	params := sip.NewParams()
	_, err := sip.ParseAddressValue(h.Value(), &uri, &params)
	return uri, err
}

// CallID is the dialog's Call-ID.
func (d *Dialog) CallID() string { return d.callID }

// SetNextHop sends the dialog's later requests (ACK included) to addr
// (host:port) instead of the first hop of the route set, the Route headers
// unchanged: what a carrier does when it fails over to another address of
// the same trunk (another balancer instance). Empty restores the route set.
func (d *Dialog) SetNextHop(addr string) {
	d.mu.Lock()
	d.nextHop = addr
	d.mu.Unlock()
}

// RemoteBye is closed once the far end's BYE has been answered 200.
func (d *Dialog) RemoteBye() <-chan struct{} { return d.remoteBye }

// RouteSet is the dialog's route set, in the order requests carry it.
func (d *Dialog) RouteSet() []string {
	out := make([]string, len(d.routeSet))
	for i := range d.routeSet {
		out[i] = d.routeSet[i].String()
	}
	return out
}

// RemoteTarget is the URI in-dialog requests are addressed to.
func (d *Dialog) RemoteTarget() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.remoteTarget.String()
}

// Request sends a request inside the dialog (RFC 3261 12.2.1.1) and waits
// for its final response, bounded by ctx and the configured Timeout. A
// non-nil body is sent as application/sdp. A 2xx to a re-INVITE is ACKed
// (again for every retransmission) and its Contact becomes the remote
// target. ACK and CANCEL are not sent this way.
func (d *Dialog) Request(ctx context.Context, method sip.RequestMethod, body []byte) (*sip.Response, error) {
	if method == sip.ACK || method == sip.CANCEL {
		return nil, fmt.Errorf("callgen: %s cannot be sent with Dialog.Request", method)
	}
	if d.u.isClosed() {
		return nil, ErrClosed
	}
	d.mu.Lock()
	d.localSeq++
	seq := d.localSeq
	d.mu.Unlock()
	req, err := d.buildRequest(method, seq)
	if err != nil {
		return nil, err
	}
	if body != nil {
		ct := sip.ContentTypeHeader("application/sdp")
		req.AppendHeader(&ct)
	}
	req.SetBody(body)
	if method == sip.INVITE {
		out, err := d.u.runInvite(ctx, req, d, nil, "")
		return out.final, err
	}
	return d.u.runNonInvite(ctx, req)
}

// Bye hangs up: sends BYE and forgets the dialog whatever the outcome.
func (d *Dialog) Bye(ctx context.Context) (*sip.Response, error) {
	select {
	case <-d.remoteBye:
		return nil, ErrRemoteBye
	default:
	}
	res, err := d.Request(ctx, sip.BYE, nil)
	d.u.removeDialog(d)
	return res, err
}

// buildRequest makes a request within the dialog: Request-URI and Route
// from the remote target and route set (loose routing when the first route
// has lr, else the strict-routing rewrite of 12.2.1.1), sent to the first
// hop. It has no body; callers set one.
func (d *Dialog) buildRequest(method sip.RequestMethod, seq uint32) (*sip.Request, error) {
	d.mu.Lock()
	target := *d.remoteTarget.Clone()
	nextHop := d.nextHop
	d.mu.Unlock()

	var ruri, next sip.Uri
	var routes []sip.Uri
	switch {
	case len(d.routeSet) == 0:
		ruri, next = target, target
	case d.routeSet[0].UriParams.Has("lr"):
		ruri, next, routes = target, d.routeSet[0], d.routeSet
	default: // strict router: it goes in the Request-URI, the target last in Route
		ruri = *d.routeSet[0].Clone()
		ruri.Headers = nil
		if ruri.UriParams != nil {
			ruri.UriParams.Remove("method")
		}
		next = d.routeSet[0]
		routes = append(append([]sip.Uri{}, d.routeSet[1:]...), target)
	}
	transport, addr, err := d.u.hop(next, d.transport)
	if err != nil {
		return nil, err
	}
	if nextHop != "" {
		addr = nextHop
	}

	req := sip.NewRequest(method, ruri)
	req.AppendHeader(d.u.newVia(transport))
	for i := range routes {
		req.AppendHeader(&sip.RouteHeader{Address: *routes[i].Clone()})
	}
	maxFwd := sip.MaxForwardsHeader(70)
	req.AppendHeader(&maxFwd)
	req.AppendHeader(sip.HeaderClone(d.local))
	req.AppendHeader(sip.HeaderClone(d.remote))
	callID := sip.CallIDHeader(d.callID)
	req.AppendHeader(&callID)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: method})
	if method == sip.INVITE || method == sip.UPDATE {
		req.AppendHeader(d.u.contact.Clone())
	}
	req.SetDestination(addr)
	d.u.prepare(req, transport)
	return req, nil
}

// offer is the SDP we send in a re-INVITE and in answers to the far end.
func (d *Dialog) offer() []byte {
	if d.sdp != nil {
		return d.sdp
	}
	return d.u.sdp(d.u.seq.Add(1), d.u.mediaPort)
}

func (d *Dialog) setTarget(c *sip.ContactHeader) {
	if c == nil || c.Address.Host == "" {
		return
	}
	d.mu.Lock()
	d.remoteTarget = *c.Address.Clone()
	d.mu.Unlock()
}

// checkRemoteSeq applies 12.2.2: a request with a lower CSeq than the last
// one from the far end is out of order.
func (d *Dialog) checkRemoteSeq(seq uint32) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.remoteSeq != 0 && seq < d.remoteSeq {
		return false
	}
	d.remoteSeq = seq
	return true
}

func (d *Dialog) markRemoteBye() {
	d.byeOnce.Do(func() { close(d.remoteBye) })
}

func (d *Dialog) expectAck(seq uint32) chan struct{} {
	ch := make(chan struct{})
	d.mu.Lock()
	d.awaitAck[seq] = ch
	d.mu.Unlock()
	return ch
}

func (d *Dialog) ackReceived(seq uint32) {
	d.mu.Lock()
	ch := d.awaitAck[seq]
	delete(d.awaitAck, seq)
	d.mu.Unlock()
	if ch != nil {
		close(ch)
	}
}

func (d *Dialog) forgetAck(seq uint32) {
	d.mu.Lock()
	delete(d.awaitAck, seq)
	d.mu.Unlock()
}

// resendAck re-sends the ACK for the INVITE with CSeq seq, if we sent one.
func (d *Dialog) resendAck(seq uint32) bool {
	d.mu.Lock()
	as := d.acks[seq]
	d.mu.Unlock()
	if as == nil {
		return false
	}
	as.mu.Lock()
	defer as.mu.Unlock()
	if as.ack == nil {
		return false
	}
	if err := d.u.writeStateless(as.ack); err != nil {
		d.u.log.Warn("callgen: ACK re-send failed", "call_id", d.callID, "error", err)
	}
	return true
}

// ackState is the ACK for the 2xx of one INVITE transaction (13.2.2.4):
// built once, on the first 2xx, with the INVITE's CSeq number and a new
// branch, sent statelessly, and sent again for every 2xx retransmission.
type ackState struct {
	seq     uint32
	mu      sync.Mutex
	ack     *sip.Request
	toTag   string
	pending int // retransmissions seen before the first 2xx was processed
}

// onSuccess handles the first 2xx passed up by the transaction.
func (as *ackState) onSuccess(d *Dialog, res *sip.Response) error {
	as.mu.Lock()
	defer as.mu.Unlock()
	if as.ack == nil {
		ack, err := d.buildRequest(sip.ACK, as.seq)
		if err != nil {
			return err
		}
		ack.SetBody(nil)
		as.ack = ack
		as.toTag = toTag(res.To())
		d.mu.Lock()
		d.acks[as.seq] = as
		d.mu.Unlock()
	}
	n := 1 + as.pending
	as.pending = 0
	for range n {
		if err := d.u.writeStateless(as.ack); err != nil {
			return err
		}
	}
	return nil
}

// onRetransmission handles a 2xx the transaction got again (sipgo passes
// these to ClientTx.OnRetransmission, not to Responses).
func (as *ackState) onRetransmission(u *UAC, res *sip.Response) {
	as.mu.Lock()
	if as.ack == nil {
		as.pending++
		as.mu.Unlock()
		return
	}
	if toTag(res.To()) != as.toTag {
		as.mu.Unlock()
		u.stray(res)
		return
	}
	err := u.writeStateless(as.ack)
	as.mu.Unlock()
	if err != nil {
		u.log.Warn("callgen: ACK re-send failed", "call_id", res.CallID().Value(), "error", err)
	}
}
