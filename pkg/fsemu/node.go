package fsemu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

// Node is one running FreeSWITCH emulator: a SIP profile on UDP and TCP
// (same port), and optionally an Event Socket server (Config.ESLAddr). Its
// methods are safe for concurrent use.
type Node struct {
	cfg Config
	log *slog.Logger

	// adm is the call-acceptance state shared by every front end.
	adm      *admission
	core     *core      // what the Event Socket reports about the node
	esl      *eslServer // nil without Config.ESLAddr
	counters counters
	calls    *registry
	rtpSeq   atomic.Uint64
	echoOn   atomic.Bool // the echo extension sends RTP back

	// SIP side.
	ua       *sipgo.UserAgent
	srv      *sipgo.Server
	client   *sipgo.Client
	udp      net.PacketConn
	tcp      net.Listener
	addr     string // bound ip:port
	host     string // advertised host
	port     int
	udpLocal sip.Addr      // the UDP listener, as sipgo keys it, for node requests
	served   chan struct{} // closed when both listeners' serve loops have returned

	// Lifetime: ctx ends at Close; every goroutine and timer callback the
	// node runs is counted in wg through enter/leave.
	ctx       context.Context
	cancel    context.CancelFunc
	mu        sync.RWMutex
	closed    bool
	stopWatch func() bool // unregisters Start's ctx watch
	stopping  atomic.Bool // input is dropped from here on
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// Start binds the node's UDP and TCP listeners and serves them until Close
// or until ctx is done.
func Start(ctx context.Context, cfg Config) (*Node, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:   cfg,
		log:   cfg.Logger.With("node", cfg.ID),
		adm:   newAdmission(cfg),
		calls: newRegistry(cfg.MaxRecords),
	}
	n.core = newCore(cfg, n.adm.active.Load)
	n.echoOn.Store(!cfg.EchoDisabled)
	n.ctx, n.cancel = context.WithCancel(context.Background())

	// The Event Socket is bound first: SIP handlers fire events to it as
	// soon as they run.
	if cfg.ESLAddr != "" {
		if err := n.listenESL(); err != nil {
			n.cancel()
			return nil, err
		}
	}
	if err := n.startSIP(); err != nil {
		n.cancel()
		if n.esl != nil {
			_ = n.esl.ln.Close()
		}
		return nil, err
	}
	if n.esl != nil {
		n.esl.start()
	}
	stop := context.AfterFunc(ctx, func() { _ = n.Close() })
	n.mu.Lock()
	n.stopWatch = stop
	n.mu.Unlock()
	n.log.Info("fsemu node started", "addr", n.addr, "advertise", n.host)
	return n, nil
}

// startSIP binds the listeners and starts the SIP stack on them.
func (n *Node) startSIP() error {
	udp, tcp, err := listenPair(n.cfg.Listen)
	if err != nil {
		return err
	}
	n.udp, n.tcp = udp, tcp
	n.addr = udp.LocalAddr().String()
	bound := udp.LocalAddr().(*net.UDPAddr)
	n.port = bound.Port
	n.host = n.cfg.Advertise
	if n.host == "" {
		n.host = advertiseHost(bound.IP)
	}
	// sipgo keys its UDP listener by the socket's own address string.
	n.udpLocal = sip.Addr{IP: bound.IP, Port: bound.Port}

	sipLog := n.log.With("component", "sipgo")
	n.ua, err = sipgo.NewUA(
		sipgo.WithUserAgent(n.cfg.UserAgent),
		sipgo.WithUserAgentHostname(n.host),
		sipgo.WithUserAgentTransportLayerOptions(
			sip.WithTransportLayerLogger(sipLog),
			sip.WithTransportLayerReadFilter(n.readFilter),
		),
		sipgo.WithUserAgentTransactionLayerOptions(
			sip.WithTransactionLayerLogger(sipLog),
			sip.WithTransactionLayerUnhandledResponseHandler(n.onStrayResponse),
		),
	)
	if err == nil {
		n.srv, err = sipgo.NewServer(n.ua, sipgo.WithServerLogger(sipLog))
	}
	if err == nil {
		n.client, err = sipgo.NewClient(n.ua,
			sipgo.WithClientLogger(sipLog),
			sipgo.WithClientHostname(n.host),
			sipgo.WithClientPort(n.port),
		)
	}
	if err != nil {
		udp.Close()
		tcp.Close()
		if n.ua != nil {
			n.ua.Close()
		}
		return fmt.Errorf("fsemu: sip stack: %w", err)
	}

	// Every message also goes to observe, on its reader goroutine, in
	// arrival order; see its comment.
	n.ua.TransportLayer().OnMessage(n.observe)
	n.registerHandlers()

	served := newReadyPacketConn(udp)
	udpDone := make(chan struct{})
	var listeners sync.WaitGroup
	listeners.Add(2)
	go func() {
		defer listeners.Done()
		defer close(udpDone)
		if err := n.srv.ServeUDP(served); err != nil && !errors.Is(err, net.ErrClosed) {
			n.log.Error("udp listener stopped", "error", err)
		}
	}()
	go func() {
		defer listeners.Done()
		if err := n.srv.ServeTCP(tcp); err != nil && !errors.Is(err, net.ErrClosed) {
			n.log.Error("tcp listener stopped", "error", err)
		}
	}()
	n.served = make(chan struct{})
	go func() {
		listeners.Wait()
		close(n.served)
	}()
	// Requests the node originates leave from the UDP listener, which sipgo
	// looks up in its connection pool: wait until Serve has put it there.
	select {
	case <-served.ready:
		return nil
	case <-udpDone:
		tcp.Close()
		<-n.served
		n.ua.Close()
		return errors.New("fsemu: udp listener failed to start")
	}
}

// readyPacketConn reports when sipgo starts reading a UDP listener, which
// it does right after registering the socket in its connection pool.
type readyPacketConn struct {
	net.PacketConn
	once  sync.Once
	ready chan struct{}
}

func newReadyPacketConn(c net.PacketConn) *readyPacketConn {
	return &readyPacketConn{PacketConn: c, ready: make(chan struct{})}
}

func (c *readyPacketConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.once.Do(func() { close(c.ready) })
	return c.PacketConn.ReadFrom(b)
}

// Addr returns the bound "ip:port", served over both UDP and TCP.
func (n *Node) Addr() string { return n.addr }

// ID returns the node's configured ID.
func (n *Node) ID() string { return n.cfg.ID }

// ESLAddr returns the bound Event Socket "ip:port", or "" when the node
// serves none.
func (n *Node) ESLAddr() string {
	if n.esl == nil {
		return ""
	}
	return n.esl.addr()
}

// ESLConnections returns the number of open Event Socket connections.
func (n *Node) ESLConnections() int {
	if n.esl == nil {
		return 0
	}
	return n.esl.connections()
}

// SetIdleCPU changes the Idle-CPU percentage reported in HEARTBEAT and
// `status` (clamped to [0, 100]). It is reported only; admission ignores it.
func (n *Node) SetIdleCPU(percent float64) { n.core.setIdleCPU(percent) }

// IdleCPU returns the Idle-CPU percentage the node reports.
func (n *Node) IdleCPU() float64 { return n.core.idle() }

// Close stops the listeners, every timer and every goroutine of the node;
// calls in progress are abandoned without signalling. Event Socket clients
// first get the SHUTDOWN event (if subscribed) and the "The system is being
// shut down." notice, and the ESL listener closes, so new connections are
// refused, as when FreeSWITCH stops. It is idempotent.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		// From here sipgo's readers drop what they read, and handlers and
		// timers refuse to start.
		n.stopping.Store(true)
		n.mu.Lock()
		n.closed = true
		stopWatch := n.stopWatch
		n.mu.Unlock()
		if stopWatch != nil {
			stopWatch()
		}
		if n.esl != nil {
			n.esl.shutdown()
		}
		n.cancel()
		for _, c := range n.calls.all() {
			c.mu.Lock()
			c.stopTimersLocked()
			c.media.close()
			c.mu.Unlock()
		}
		err := errors.Join(n.udp.Close(), n.tcp.Close())
		<-n.served
		// Closing the UA ends every transaction and connection first, so no
		// handler can stay blocked writing to a peer while we wait.
		if uerr := n.ua.Close(); uerr != nil {
			// Connections the peers already closed; nothing to report.
			n.log.Debug("closing sip stack", "error", uerr)
		}
		n.wg.Wait()
		// A request read just before the stop may have had sipgo open a
		// socket to answer it after the first sweep; close those too.
		_ = n.ua.TransportLayer().Close()
		n.closeErr = err
		n.log.Info("fsemu node stopped", "addr", n.addr)
	})
	return n.closeErr
}

// readFilter sees every read of every SIP socket before sipgo parses it.
// Once Close has begun it drops everything, so nothing new is dispatched.
func (n *Node) readFilter(_ sip.TransportReadProps, data []byte) ([]byte, error) {
	if n.stopping.Load() {
		return nil, nil
	}
	return data, nil
}

// enter registers a unit of work (handler, timer callback, goroutine) with
// the node; it fails once Close has begun. Each successful enter must be
// paired with leave.
func (n *Node) enter() bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if n.closed {
		return false
	}
	n.wg.Add(1)
	return true
}

func (n *Node) leave() { n.wg.Done() }

// goTracked runs f in a goroutine that Close waits for.
func (n *Node) goTracked(f func()) {
	if !n.enter() {
		return
	}
	go func() {
		defer n.leave()
		f()
	}()
}

// sendBye sends a node-originated BYE in its own transaction and waits for
// the final response in the background.
func (n *Node) sendBye(callID string, bye *sip.Request) {
	n.counters.byesSent.Add(1)
	if sip.NetworkToLower(bye.Transport()) == "udp" {
		// Leave from the listening socket, where the proxy expects us.
		bye.Laddr = n.udpLocal
	}
	n.goTracked(func() {
		tx, err := n.client.TransactionRequest(n.ctx, bye, sipgo.ClientRequestAddVia)
		if err != nil {
			n.log.Warn("sending BYE failed", "call_id", callID, "to", bye.Destination(), "error", err)
			return
		}
		defer tx.Terminate()
		for {
			select {
			case res := <-tx.Responses():
				if res.IsProvisional() {
					continue
				}
				n.log.Debug("BYE answered", "call_id", callID, "status", res.StatusCode)
				return
			case <-tx.Done():
				n.log.Warn("BYE got no answer", "call_id", callID, "error", tx.Err())
				return
			case <-n.ctx.Done():
				return
			}
		}
	})
}

// onStrayResponse takes responses no client transaction matches, such as a
// retransmitted 200 to a BYE whose transaction is over.
func (n *Node) onStrayResponse(res *sip.Response) {
	n.log.Debug("stray response", "status", res.StatusCode, "call_id", callIDOf(res))
}

func callIDOf(m sip.Message) string {
	if h := m.CallID(); h != nil {
		return h.Value()
	}
	return ""
}

// listenPair binds UDP and TCP on the same port. With port 0 it picks a
// free UDP port, binds TCP on it and retries when TCP's is taken.
func listenPair(addr string) (net.PacketConn, net.Listener, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("fsemu: listen %q: %w", addr, err)
	}
	port, _ := strconv.Atoi(portStr)
	attempts := 1
	if port == 0 {
		attempts = 50
	}
	var lastErr error
	for i := 0; i < attempts; i++ {
		udp, err := net.ListenPacket("udp", net.JoinHostPort(host, portStr))
		if err != nil {
			return nil, nil, fmt.Errorf("fsemu: listen udp %s: %w", addr, err)
		}
		p := udp.LocalAddr().(*net.UDPAddr).Port
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		lastErr = err
	}
	return nil, nil, fmt.Errorf("fsemu: listen tcp %s: %w", addr, lastErr)
}

// advertiseHost picks the host to put in Contact and SDP for a listener
// bound to ip.
func advertiseHost(ip net.IP) string {
	if !ip.IsUnspecified() {
		return ip.String()
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}
