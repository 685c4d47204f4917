package callgen

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"

	"github.com/sipbalancer/sipbalancer/pkg/rtpstream"
)

// ErrClosed is returned by requests on a closed UAC.
var ErrClosed = errors.New("callgen: UAC closed")

// maxCleanup bounds the best-effort teardown (CANCEL after a timeout, BYE of
// an unwanted or abandoned call) done after the caller's context ended.
const maxCleanup = 5 * time.Second

// UAC is one SIP user agent client: a UDP and a TCP listener on the same
// port, a sipgo transaction layer, and the dialogs of the calls it placed.
// It is safe for concurrent use; Run shares one UAC between all its calls.
type UAC struct {
	cfg        Config
	log        *slog.Logger
	transport  string // "UDP" or "TCP": initial requests
	host       string // advertised in Via, Contact, SDP (no brackets)
	port       int
	udpLaddr   sip.Addr // the UDP listener, so UDP requests leave from it
	target     string   // host:port of the proxy
	requestURI sip.Uri
	contact    sip.ContactHeader
	mediaPort  int
	mediaIP    netip.Addr      // where calls' RTP sockets are bound (Config.RTP)
	codec      rtpstream.Codec // what they send

	ua     *sipgo.UserAgent
	client *sipgo.Client
	server *sipgo.Server
	udp    net.PacketConn
	tcp    net.Listener
	media  net.PacketConn

	idPrefix string
	seq      atomic.Uint64
	sessBase uint64 // SDP o= session ids start here

	mu      sync.Mutex
	dialogs map[string]*Dialog // by Call-ID (ours are unique)
	strays  map[string]bool    // Call-ID + To-tag of 2xx answered with ACK+BYE
	closed  bool

	bg        sync.WaitGroup // serve loops and background teardowns
	closeCtx  context.Context
	closeFn   context.CancelFunc
	closeOnce sync.Once
}

// NewUAC opens the listeners and starts serving. Close releases them.
func NewUAC(cfg Config) (*UAC, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	u := &UAC{
		cfg:       cfg,
		log:       cfg.Logger,
		transport: strings.ToUpper(cfg.Transport),
		target:    cfg.Target,
		dialogs:   make(map[string]*Dialog),
		strays:    make(map[string]bool),
		idPrefix:  randHex(6),
		sessBase:  uint64(time.Now().Unix()) << 20,
	}
	if err := sip.ParseUri(cfg.RequestURI, &u.requestURI); err != nil {
		return nil, fmt.Errorf("callgen: RequestURI %q: %w", cfg.RequestURI, err)
	}

	lhost, lport, _ := net.SplitHostPort(cfg.LocalAddr)
	udpConn, tcpLn, err := listenPair(lhost, lport)
	if err != nil {
		return nil, fmt.Errorf("callgen: listen on %s: %w", cfg.LocalAddr, err)
	}
	la := udpConn.LocalAddr().(*net.UDPAddr)
	u.udpLaddr = sip.Addr{IP: la.IP, Port: la.Port, Zone: la.Zone}
	u.port = la.Port
	u.host = la.IP.String()
	if la.IP.IsUnspecified() {
		ip, err := outboundIP(cfg.Target)
		if err != nil {
			udpConn.Close()
			tcpLn.Close()
			return nil, fmt.Errorf("callgen: no local address toward %s (set LocalAddr): %w", cfg.Target, err)
		}
		u.host = ip.String()
	}
	media, err := net.ListenPacket("udp", net.JoinHostPort(lhost, "0"))
	if err != nil {
		udpConn.Close()
		tcpLn.Close()
		return nil, fmt.Errorf("callgen: media port: %w", err)
	}
	u.media = media
	u.mediaPort = media.LocalAddr().(*net.UDPAddr).Port
	u.mediaIP, _ = netip.AddrFromSlice(la.IP)
	u.mediaIP = u.mediaIP.Unmap()
	u.codec, _ = rtpstream.CodecByName(cfg.Codec)

	u.contact = sip.ContactHeader{Address: sip.Uri{Scheme: "sip", User: cfg.User, Host: u.host, Port: u.port}}
	if u.transport == "TCP" {
		u.contact.Address.UriParams = sip.NewParams()
		u.contact.Address.UriParams.Add("transport", "tcp")
	}

	sipLog := u.log.With("component", "sipgo")
	u.ua, err = sipgo.NewUA(
		sipgo.WithUserAgent("sipbalancer-callgen"),
		sipgo.WithUserAgentHostname(u.host),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(sipLog),
			sip.WithTransactionLayerUnhandledResponseHandler(u.onUnhandledResponse),
		),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerLogger(sipLog),
			// Bounded TCP dials and writes: a stuck proxy must not hang a call.
			sip.WithTransportLayerTransports(sip.TransportsConfig{TCP: &sip.TransportTCP{
				WriteTimeout: cfg.Timeout,
				DialerCreate: func(laddr net.Addr) net.Dialer {
					return net.Dialer{Timeout: cfg.Timeout, LocalAddr: laddr}
				},
			}}),
		),
	)
	if err != nil {
		udpConn.Close()
		tcpLn.Close()
		media.Close()
		return nil, err
	}
	u.client, _ = sipgo.NewClient(u.ua, sipgo.WithClientLogger(sipLog))
	u.server, _ = sipgo.NewServer(u.ua, sipgo.WithServerLogger(sipLog))
	u.registerHandlers()
	u.closeCtx, u.closeFn = context.WithCancel(context.Background())

	// Requests over UDP are written through the listener's pool entry, which
	// sipgo adds when Serve starts; wait for that before anything is sent.
	ready := &readyPacketConn{PacketConn: udpConn, ready: make(chan struct{})}
	u.udp, u.tcp = ready, tcpLn
	u.bg.Add(2)
	go func() {
		defer u.bg.Done()
		if err := u.server.ServeUDP(ready); err != nil && !errors.Is(err, net.ErrClosed) {
			u.log.Warn("callgen: UDP listener stopped", "error", err)
		}
	}()
	go func() {
		defer u.bg.Done()
		if err := u.server.ServeTCP(tcpLn); err != nil && !errors.Is(err, net.ErrClosed) {
			u.log.Warn("callgen: TCP listener stopped", "error", err)
		}
	}()
	select {
	case <-ready.ready:
	case <-time.After(5 * time.Second):
		u.Close()
		return nil, errors.New("callgen: UDP listener did not start")
	}
	return u, nil
}

// Addr is the advertised local address (ip:port) of both listeners.
func (u *UAC) Addr() string { return net.JoinHostPort(u.host, strconv.Itoa(u.port)) }

// Close ends every transaction, closes the listeners and waits for the
// UAC's goroutines. Dialogs still up are abandoned without BYE.
func (u *UAC) Close() error {
	u.closeOnce.Do(func() {
		u.mu.Lock()
		u.closed = true
		u.mu.Unlock()
		u.closeFn()
		u.udp.Close()
		u.tcp.Close()
		u.ua.Close()
		u.media.Close()
		u.bg.Wait()
	})
	return nil
}

// goBackground runs f on a goroutine Close waits for; false once closed.
func (u *UAC) goBackground(f func(ctx context.Context)) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false
	}
	u.bg.Add(1)
	go func() {
		defer u.bg.Done()
		f(u.closeCtx)
	}()
	return true
}

func (u *UAC) isClosed() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.closed
}

func (u *UAC) newCallID() string {
	return fmt.Sprintf("%s-%d@%s", u.idPrefix, u.seq.Add(1), u.host)
}

func (u *UAC) ownsCallID(id string) bool { return strings.HasPrefix(id, u.idPrefix+"-") }

func (u *UAC) addDialog(d *Dialog) {
	u.mu.Lock()
	u.dialogs[d.callID] = d
	u.mu.Unlock()
}

func (u *UAC) removeDialog(d *Dialog) {
	u.mu.Lock()
	if u.dialogs[d.callID] == d {
		delete(u.dialogs, d.callID)
	}
	u.mu.Unlock()
}

func (u *UAC) lookupDialog(callID string) *Dialog {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.dialogs[callID]
}

func (u *UAC) cleanupTimeout() time.Duration { return min(u.cfg.Timeout, maxCleanup) }

// newVia is a fresh top Via for a request we originate (new branch, rport).
func (u *UAC) newVia(transport string) *sip.ViaHeader {
	v := &sip.ViaHeader{
		ProtocolName:    "SIP",
		ProtocolVersion: "2.0",
		Transport:       transport,
		Host:            u.host,
		Port:            u.port,
		Params:          sip.NewParams(),
	}
	v.Params.Add("branch", sip.GenerateBranchN(16))
	v.Params.Add("rport", "")
	return v
}

// prepare pins a request's transport and, for UDP, sends it from the
// listener so that responses and retransmissions come back to it.
func (u *UAC) prepare(req *sip.Request, transport string) {
	req.SetTransport(transport)
	if transport == "UDP" {
		req.Laddr = u.udpLaddr
	}
}

// hop gives the transport and host:port to send a request whose next hop
// is uri (a Route entry or the remote target), per RFC 3263 without DNS
// SRV: the transport parameter, else def; the port, else the default one.
func (u *UAC) hop(uri sip.Uri, def string) (transport, addr string, err error) {
	transport = def
	if tp, ok := uri.UriParams.Get("transport"); ok && tp != "" {
		transport = strings.ToUpper(tp)
	}
	if uri.IsEncrypted() {
		transport = "TLS"
	}
	if transport != "UDP" && transport != "TCP" {
		return "", "", fmt.Errorf("callgen: next hop %s: transport %s not supported", uri.String(), transport)
	}
	host := uri.Host
	if maddr, ok := uri.UriParams.Get("maddr"); ok && maddr != "" {
		host = maddr
	}
	port := uri.Port
	if port == 0 {
		port = sip.DefaultPort(transport)
	}
	return transport, net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(port)), nil
}

// noBuild keeps sipgo from adding or changing headers: requests are built
// complete here.
func noBuild(*sipgo.Client, *sip.Request) error { return nil }

// writeStateless sends a request without a transaction (ACK for 2xx), as
// sipgo's Client.WriteRequest does, but with connection setup bounded.
func (u *UAC) writeStateless(req *sip.Request) error {
	ctx, cancel := context.WithTimeout(u.closeCtx, u.cfg.Timeout)
	defer cancel()
	conn, err := u.ua.TransportLayer().ClientRequestConnection(ctx, req)
	if err != nil {
		return err
	}
	defer conn.TryClose()
	return conn.WriteMsg(req)
}

// onUnhandledResponse gets responses that match no client transaction. A
// 2xx to one of our INVITEs whose transaction is gone (Timer M, or given up
// after Timeout) still needs its ACK; one that belongs to no dialog of ours
// is ACKed and hung up.
func (u *UAC) onUnhandledResponse(res *sip.Response) {
	cseq := res.CSeq()
	if cseq == nil || cseq.MethodName != sip.INVITE || !res.IsSuccess() || res.CallID() == nil {
		return
	}
	callID := res.CallID().Value()
	if d := u.lookupDialog(callID); d != nil && d.remoteTag == toTag(res.To()) {
		if !d.resendAck(cseq.SeqNo) {
			u.log.Info("callgen: 2xx for an INVITE we did not ACK", "call_id", callID, "cseq", cseq.SeqNo)
		}
		return
	}
	if u.ownsCallID(callID) {
		u.stray(res)
	}
}

// stray ACKs a 2xx that opened a dialog we do not want (a forked answer, an
// answer after CANCEL or after we gave up) and sends it a BYE, once.
func (u *UAC) stray(res *sip.Response) {
	key := res.CallID().Value() + "|" + toTag(res.To())
	u.mu.Lock()
	seen := u.strays[key]
	u.strays[key] = true
	u.mu.Unlock()

	d, err := newDialog(u, res, u.requestURI, u.transport)
	if d == nil {
		u.log.Warn("callgen: cannot ACK unexpected 2xx", "call_id", res.CallID().Value(), "error", err)
		return
	}
	as := &ackState{seq: res.CSeq().SeqNo}
	if err := as.onSuccess(d, res); err != nil {
		u.log.Warn("callgen: ACK for unexpected 2xx failed", "call_id", d.callID, "error", err)
	}
	if seen {
		return
	}
	u.log.Info("callgen: hanging up unexpected 2xx", "call_id", d.callID, "status", res.StatusCode)
	u.goBackground(func(ctx context.Context) {
		ctx, cancel := context.WithTimeout(ctx, u.cleanupTimeout())
		defer cancel()
		d.Bye(ctx)
	})
}

// listenPair opens UDP and TCP listeners on the same port; with port 0 it
// retries until the port the kernel picked for UDP is also free for TCP.
func listenPair(host, port string) (net.PacketConn, net.Listener, error) {
	udpNet, tcpNet := "udp", "tcp"
	if ip := net.ParseIP(host); ip != nil && ip.To4() != nil {
		udpNet, tcpNet = "udp4", "tcp4"
	}
	attempts := 1
	if port == "0" || port == "" {
		port, attempts = "0", 32
	}
	var lastErr error
	for range attempts {
		pc, err := net.ListenPacket(udpNet, net.JoinHostPort(host, port))
		if err != nil {
			return nil, nil, err
		}
		p := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen(tcpNet, net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		lastErr = err
	}
	return nil, nil, lastErr
}

// outboundIP is the local IP the kernel routes toward target (no packet is
// sent: connecting a UDP socket only picks the route).
func outboundIP(target string) (net.IP, error) {
	c, err := net.Dial("udp", target)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).IP, nil
}

// readyPacketConn signals the first ReadFrom, which sipgo's UDP Serve calls
// right after adding the listener to its connection pool.
type readyPacketConn struct {
	net.PacketConn
	once  sync.Once
	ready chan struct{}
}

func (c *readyPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.once.Do(func() { close(c.ready) })
	return c.PacketConn.ReadFrom(b)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func toTag(h *sip.ToHeader) string {
	if h == nil {
		return ""
	}
	t, _ := h.Params.Get("tag")
	return t
}

func fromTag(h *sip.FromHeader) string {
	if h == nil {
		return ""
	}
	t, _ := h.Params.Get("tag")
	return t
}
