package guard

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// TCPLimits bound connections on a TCP or TLS listener. A zero field turns
// its check off.
type TCPLimits struct {
	// MaxConnections bounds the connections open at once.
	MaxConnections int
	// MaxPerSource bounds the connections open at once from one address
	// (one /64 for IPv6).
	MaxPerSource int
	// IdleTimeout closes a connection that has sent nothing for this long.
	IdleTimeout time.Duration
	// ReadTimeout closes a connection whose message (and, for the first
	// one, the TLS handshake) takes longer than this from its first octet
	// (from the accept for the first message); a write the peer does not
	// take within it closes the connection too. It is what defeats
	// slow-loris senders, which trickle octets to stay under IdleTimeout.
	ReadTimeout time.Duration
}

// ListenerOptions configure NewListener.
type ListenerOptions struct {
	TCPLimits
	// Message limits apply to every message of every connection; the
	// stream is framed the way sipgo frames it (see scanner). A
	// connection that breaks a limit is closed.
	Message MessageLimits
	// Allow, when set, is asked about every new connection's source
	// address; a connection it refuses is closed at once and counted as
	// untrusted.
	Allow func(src netip.Addr) bool
	// Counters receives refusals (optional).
	Counters *Counters
}

// Listener wraps a TCP or TLS listener with the limits of ListenerOptions.
// Connections over a limit are accepted and closed at once (with a reset
// where the socket allows it) and counted; Accept goes on with the next
// one, so sipgo's accept loop never sees them. Temporary accept errors
// (out of file descriptors) are retried with a backoff instead of
// returned: sipgo stops serving a listener whose Accept fails.
type Listener struct {
	net.Listener
	opts ListenerOptions

	mu     sync.Mutex
	active int
	per    map[netip.Addr]int
}

// LimitListener bounds l to total connections at once and perSource from
// one address (0: no bound).
func LimitListener(l net.Listener, total, perSource int) net.Listener {
	return NewListener(l, ListenerOptions{TCPLimits: TCPLimits{MaxConnections: total, MaxPerSource: perSource}})
}

// NewListener wraps l. For TLS, wrap the TLS listener (tls.NewListener's
// result), not the TCP one beneath it: the message limits then read
// plaintext, and ReadTimeout bounds the handshake.
func NewListener(l net.Listener, opts ListenerOptions) *Listener {
	return &Listener{Listener: l, opts: opts, per: make(map[netip.Addr]int)}
}

// Active returns the number of connections open.
func (l *Listener) Active() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.active
}

// Accept returns the next connection within the limits.
func (l *Listener) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() && !errors.Is(err, net.ErrClosed) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return nil, err
		}
		delay = 0
		src := remoteIP(c.RemoteAddr())
		if l.opts.Allow != nil && !l.opts.Allow(src) {
			l.opts.Counters.Add(ReasonUntrusted)
			closeNow(c)
			continue
		}
		key := connKey(src)
		if !l.take(key) {
			l.opts.Counters.Add(ReasonTCPLimit)
			closeNow(c)
			continue
		}
		return l.wrap(c, key), nil
	}
}

func (l *Listener) take(key netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.opts.MaxConnections > 0 && l.active >= l.opts.MaxConnections {
		return false
	}
	if l.opts.MaxPerSource > 0 && l.per[key] >= l.opts.MaxPerSource {
		return false
	}
	l.active++
	l.per[key]++
	return true
}

func (l *Listener) release(key netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.active--
	if n := l.per[key] - 1; n > 0 {
		l.per[key] = n
	} else {
		delete(l.per, key)
	}
}

func (l *Listener) wrap(c net.Conn, key netip.Addr) net.Conn {
	lc := &limitConn{Conn: c, l: l, key: key}
	o := &l.opts
	if o.Message.on() || o.ReadTimeout > 0 {
		lc.sc = newStreamScanner(o.Message)
	}
	if o.ReadTimeout > 0 {
		lc.msgStart = time.Now()
	}
	return lc
}

// connKey is what MaxPerSource counts by: the address, or its /64.
func connKey(src netip.Addr) netip.Addr {
	if src.Is6() {
		p, _ := src.Prefix(64)
		return p.Addr()
	}
	return src
}

func remoteIP(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.TCPAddr:
		return v.AddrPort().Addr().Unmap()
	case *net.UDPAddr:
		return v.AddrPort().Addr().Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// closeNow closes c with a reset where it can: a refused peer gets no
// graceful close and we keep no TIME_WAIT.
func closeNow(c net.Conn) {
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
		// TLS: reset the TCP connection beneath instead of writing a
		// close_notify the peer may never read.
		closeNow(tc.NetConn())
	}
	if tc, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// limitConn is an accepted connection under the listener's limits. sipgo
// reads it from one goroutine; writes may come from others.
type limitConn struct {
	net.Conn
	l   *Listener
	key netip.Addr
	sc  *scanner // nil: no message limits and no read timeout

	// msgStart is when the message being read began (zero between
	// messages); only the reading goroutine touches it.
	msgStart time.Time
	failed   bool

	closeOnce sync.Once
}

// Read reads under the idle and read deadlines and feeds what it read to
// the message scanner. A limit broken or a deadline passed closes the
// connection and reads as io.EOF, so that sipgo drops it quietly.
func (c *limitConn) Read(b []byte) (int, error) {
	if c.failed {
		return 0, io.EOF
	}
	o := &c.l.opts
	if o.IdleTimeout > 0 || o.ReadTimeout > 0 {
		now := time.Now()
		var d time.Time
		if o.IdleTimeout > 0 {
			d = now.Add(o.IdleTimeout)
		}
		if o.ReadTimeout > 0 && !c.msgStart.IsZero() {
			if m := c.msgStart.Add(o.ReadTimeout); d.IsZero() || m.Before(d) {
				d = m
			}
		}
		if err := c.Conn.SetReadDeadline(d); err != nil {
			return 0, err
		}
	}
	n, err := c.Conn.Read(b)
	if n > 0 && c.sc != nil {
		if r := c.sc.feed(b[:n]); r != ReasonNone {
			c.fail(r)
			return 0, io.EOF
		}
		if o.ReadTimeout > 0 {
			switch {
			case c.sc.idle():
				c.msgStart = time.Time{}
			case c.msgStart.IsZero():
				c.msgStart = time.Now()
			}
		}
	}
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.fail(ReasonTCPTimeout)
			return n, io.EOF
		}
	}
	return n, err
}

// Write writes under the read timeout: a peer that does not read is a
// slow-loris too.
func (c *limitConn) Write(b []byte) (int, error) {
	if t := c.l.opts.ReadTimeout; t > 0 {
		if err := c.Conn.SetWriteDeadline(time.Now().Add(t)); err != nil {
			return 0, err
		}
	}
	return c.Conn.Write(b)
}

func (c *limitConn) fail(r Reason) {
	c.failed = true
	c.l.opts.Counters.Add(r)
	closeNow(c.Conn)
	c.closeOnce.Do(func() { c.l.release(c.key) })
}

// Close closes the connection and frees its place in the limits.
func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() { c.l.release(c.key) })
	return err
}
