package sip

import (
	"bytes"
	"net"
	"net/netip"
	"sync"

	"github.com/emiago/sipgo/sip"
	"go.uber.org/zap"

	"github.com/sipbalancer/sipbalancer/pkg/dispatcher"
)

// onStrayResponse gets responses that match no client transaction of ours
// (sipgo's unhandled-response hook). §16.7 says a proxy forwards them
// statelessly; we do that for responses whose top Via is ours, with two
// exceptions that protect callers:
//
//   - a non-2xx to an INVITE: its transaction is gone, so it answers a
//     branch we abandoned (the caller already has its final response);
//   - a 2xx to an INVITE from a node other than the one that owns the call:
//     a branch we abandoned answered late. It is ACKed and sent a BYE
//     instead, so that the node does not keep a call nobody is in.
//
// What stays: 2xx retransmissions after the client transaction ended
// (Timer M), and answers to requests we forwarded statelessly (CANCEL).
func (p *Proxy) onStrayResponse(res *sip.Response) {
	defer func() {
		if r := recover(); r != nil {
			p.log.Error("panic on stray response", zap.Any("panic", r))
		}
	}()
	var vias [2]*sip.ViaHeader
	n := 0
	for _, h := range res.Headers() {
		if v, ok := h.(*sip.ViaHeader); ok {
			vias[n] = v
			n++
			if n == 2 {
				break
			}
		}
	}
	if n < 2 || res.CSeq() == nil || res.CallID() == nil {
		return
	}
	b, _ := vias[0].Params.Get("branch")
	if _, ours := isOurBranch(b); !ours || !p.self.has(vias[0].Host, vias[0].Port, vias[0].Transport == "TLS") {
		return
	}
	if res.CSeq().MethodName == sip.INVITE {
		if !res.IsSuccess() {
			return
		}
		if src := p.responseSourceNode(res); src != nil {
			ctx, cancel := storeCtx()
			bd, err := p.store.Lookup(ctx, string(*res.CallID()))
			cancel()
			if err == nil && bd.NodeID != src.ID() {
				p.endStray(res, src.Spec.Addr.String(), src.Spec.Transport)
				return
			}
		}
	}
	next := vias[1]
	p.sendResponse(upstreamResponse(res, viaDest(next)), next.Transport)
}

func (p *Proxy) responseSourceNode(res *sip.Response) *dispatcher.Node {
	ap, err := netip.ParseAddrPort(res.Source())
	if err != nil {
		return nil
	}
	return p.disp.Snapshot().NodeBySource(ap)
}

// endStray ACKs a stray 2xx and BYEs its dialog (see onStrayResponse).
func (p *Proxy) endStray(res *sip.Response, dest, transport string) {
	target := sip.Uri{Scheme: "sip"}
	if c := res.Contact(); c != nil {
		target = c.Address
	} else {
		host, port, _ := net.SplitHostPort(dest)
		target.Host = host
		target.Port = atoiOr(port, 5060)
	}
	l := p.listenerFor(transport)
	mk := func(m sip.RequestMethod, seq uint32) *sip.Request {
		r := sip.NewRequest(m, target)
		r.AppendHeader(newVia(l, transport, sip.GenerateBranch()))
		mf := sip.MaxForwardsHeader(defaultMaxForwards)
		r.AppendHeader(&mf)
		r.AppendHeader(res.From())
		r.AppendHeader(res.To())
		r.AppendHeader(res.CallID())
		r.AppendHeader(&sip.CSeqHeader{SeqNo: seq, MethodName: m})
		r.SetBody(nil)
		r.SetTransport(transport)
		r.SetDestination(dest)
		r.Laddr = p.laddrFor(transport)
		return r
	}
	seq := res.CSeq().SeqNo
	_ = p.cl.WriteRequest(mk(sip.ACK, seq), noBuild)
	bye := mk(sip.BYE, seq+1)
	p.log.Info("ending late answer of an abandoned branch", zap.String("call_id", string(*res.CallID())))
	p.bg(func() { p.fireAndDrain(bye) })
}

func atoiOr(s string, def int) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return def
		}
		n = n*10 + int(s[i]-'0')
	}
	if n == 0 {
		return def
	}
	return n
}

var respBufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// sendResponse sends a response statelessly. Over UDP it is written from
// the listener socket straight to its destination; sipgo's stateless path
// only finds sockets for addresses it has already seen. Over TCP/TLS the
// connection pool finds the connection the request came on.
func (p *Proxy) sendResponse(res *sip.Response, transport string) {
	if transport == "UDP" || transport == "udp" {
		l := p.byNetwork["udp"]
		if l == nil {
			return
		}
		ua, err := resolveUDP(res.Destination())
		if err != nil {
			p.debug("stateless response: bad destination", zap.String("dest", res.Destination()), zap.Error(err))
			return
		}
		buf := respBufPool.Get().(*bytes.Buffer)
		buf.Reset()
		res.StringWrite(buf)
		_, err = l.udp.WriteTo(buf.Bytes(), ua)
		respBufPool.Put(buf)
		if err != nil {
			p.debug("stateless response failed", zap.Error(err))
		}
		return
	}
	res.SetTransport(transport)
	if err := p.srv.WriteResponse(res); err != nil {
		p.debug("stateless response failed", zap.String("dest", res.Destination()), zap.Error(err))
	}
}

func resolveUDP(dest string) (*net.UDPAddr, error) {
	if ap, err := netip.ParseAddrPort(dest); err == nil {
		return net.UDPAddrFromAddrPort(ap), nil
	}
	return net.ResolveUDPAddr("udp", dest)
}
