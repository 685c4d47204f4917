package callgen

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/emiago/sipgo/sip"
	"github.com/stretchr/testify/require"
)

// testRelay is a stateless record-routing proxy (RFC 3261 16.11) over UDP
// and TCP on one port: it pops its own Route, record-routes new INVITEs,
// forwards by the next Route, else by Request-URI, else (a new request with
// no Route) to next; responses go back by Via.
type testRelay struct {
	t      *testing.T
	name   string
	host   string
	port   int
	next   string // where new requests go
	udp    net.PacketConn
	tcp    net.Listener
	parser *sip.Parser
	wg     sync.WaitGroup

	n      notifier
	mu     sync.Mutex
	conns  map[string]net.Conn // TCP, by remote address
	seen   []relayed
	closed bool
}

// relayed is a request as the relay received it.
type relayed struct {
	method sip.RequestMethod
	src    string
	ruri   string
	routes []string
}

func newTestRelay(t *testing.T, name, next string) *testRelay {
	t.Helper()
	r := &testRelay{t: t, name: name, next: next, parser: sip.NewParser(), conns: make(map[string]net.Conn)}
	var err error
	r.udp, r.tcp, err = listenPair("127.0.0.1", "0")
	require.NoError(t, err)
	r.host, r.port = "127.0.0.1", r.udp.LocalAddr().(*net.UDPAddr).Port
	r.wg.Add(2)
	go r.readUDP()
	go r.acceptTCP()
	t.Cleanup(r.close)
	return r
}

func (r *testRelay) addr() string { return net.JoinHostPort(r.host, strconv.Itoa(r.port)) }

func (r *testRelay) close() {
	r.udp.Close()
	r.tcp.Close()
	r.mu.Lock()
	r.closed = true
	for _, c := range r.conns {
		c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *testRelay) readUDP() {
	defer r.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, src, err := r.udp.ReadFrom(buf)
		if err != nil {
			return
		}
		msg, err := r.parser.ParseSIP(append([]byte(nil), buf[:n]...))
		if err != nil {
			continue
		}
		r.handle(msg, "UDP", src.String())
	}
}

func (r *testRelay) acceptTCP() {
	defer r.wg.Done()
	for {
		c, err := r.tcp.Accept()
		if err != nil {
			return
		}
		r.addConn(c)
	}
}

func (r *testRelay) addConn(c net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		c.Close()
		return
	}
	r.conns[c.RemoteAddr().String()] = c
	r.wg.Add(1)
	go r.readTCP(c)
}

func (r *testRelay) readTCP(c net.Conn) {
	defer r.wg.Done()
	defer c.Close()
	src := c.RemoteAddr().String()
	stream := r.parser.NewSIPStream()
	buf := make([]byte, 65535)
	for {
		n, err := c.Read(buf)
		if err != nil {
			r.mu.Lock()
			if r.conns[src] == c {
				delete(r.conns, src)
			}
			r.mu.Unlock()
			return
		}
		err = stream.ParseSIPStream(buf[:n], func(msg sip.Message) { r.handle(msg, "TCP", src) })
		if err != nil && !errors.Is(err, sip.ErrParseSipPartial) {
			return
		}
	}
}

func (r *testRelay) isMe(u sip.Uri) bool {
	return u.Host == r.host && u.Port == r.port
}

func (r *testRelay) handle(msg sip.Message, transport, src string) {
	switch m := msg.(type) {
	case *sip.Request:
		r.forwardRequest(m, transport, src)
	case *sip.Response:
		r.forwardResponse(m, transport)
	}
}

func (r *testRelay) forwardRequest(req *sip.Request, transport, src string) {
	seen := relayed{method: req.Method, src: src, ruri: req.Recipient.String()}
	for _, h := range req.GetHeaders("Route") {
		seen.routes = append(seen.routes, h.Value())
	}
	r.mu.Lock()
	r.seen = append(r.seen, seen)
	r.mu.Unlock()
	r.n.broadcast()

	if mf := req.MaxForwards(); mf != nil {
		if mf.Val() == 0 {
			return
		}
		mf.Dec()
	}
	popped := false
	if rt := req.Route(); rt != nil && r.isMe(rt.Address) {
		req.RemoveHeader("Route")
		popped = true
	}
	via := req.Via()
	if via == nil {
		return
	}
	host, port, _ := net.SplitHostPort(src)
	via.Params.Add("received", host)
	via.Params.Add("rport", port)
	branch, _ := via.Params.Get("branch")

	if req.IsInvite() && toTag(req.To()) == "" {
		rr := &sip.RecordRouteHeader{Address: sip.Uri{Scheme: "sip", Host: r.host, Port: r.port, UriParams: sip.NewParams()}}
		rr.Address.UriParams.Add("transport", strings.ToLower(transport))
		rr.Address.UriParams.Add("lr", "")
		req.PrependHeader(rr)
	}
	var dest string
	switch rt := req.Route(); {
	case rt != nil:
		dest = hostPort(rt.Address, transport)
	case popped: // in-dialog, past the last proxy: the remote target
		dest = hostPort(req.Recipient, transport)
	default: // a new request (or its CANCEL or non-2xx ACK)
		dest = r.next
	}
	// Stateless: the branch is a function of the incoming one, so a CANCEL
	// or a non-2xx ACK gets the branch its INVITE got.
	sum := sha256.Sum256([]byte(r.name + branch))
	myVia := &sip.ViaHeader{ProtocolName: "SIP", ProtocolVersion: "2.0", Transport: transport, Host: r.host, Port: r.port, Params: sip.NewParams()}
	myVia.Params.Add("branch", sip.RFC3261BranchMagicCookie+"-"+r.name+"-"+hex.EncodeToString(sum[:8]))
	req.PrependHeader(myVia)
	r.send(transport, dest, req)
}

func (r *testRelay) forwardResponse(res *sip.Response, transport string) {
	if v := res.Via(); v == nil || v.Host != r.host || v.Port != r.port {
		return
	}
	res.RemoveHeader("Via")
	v := res.Via()
	if v == nil {
		return
	}
	host, port := v.Host, v.Port
	if h, ok := v.Params.Get("received"); ok && h != "" {
		host = h
	}
	if p, ok := v.Params.Get("rport"); ok && p != "" {
		port, _ = strconv.Atoi(p)
	}
	if port == 0 {
		port = sip.DefaultPort(transport)
	}
	r.send(transport, net.JoinHostPort(host, strconv.Itoa(port)), res)
}

func (r *testRelay) send(transport, dest string, msg sip.Message) {
	data := []byte(msg.String())
	if transport == "UDP" {
		ua, err := net.ResolveUDPAddr("udp", dest)
		if err == nil {
			r.udp.WriteTo(data, ua)
		}
		return
	}
	r.mu.Lock()
	c := r.conns[dest]
	r.mu.Unlock()
	if c == nil {
		var err error
		c, err = net.Dial("tcp", dest)
		if err != nil {
			return // the test sees the request missing downstream
		}
		r.addConn(c)
	}
	c.Write(data)
}

// requests are the requests of method the relay received.
func (r *testRelay) requests(method sip.RequestMethod) []relayed {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []relayed
	for _, s := range r.seen {
		if s.method == method {
			out = append(out, s)
		}
	}
	return out
}

func hostPort(u sip.Uri, transport string) string {
	port := u.Port
	if port == 0 {
		port = sip.DefaultPort(transport)
	}
	return net.JoinHostPort(u.Host, strconv.Itoa(port))
}
