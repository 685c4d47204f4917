package guard

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// server accepts from ln until it is closed; each connection's reads are
// collected and the connection is closed when its read fails, as sipgo's
// reader does.
type server struct {
	ln   net.Listener
	mu   sync.Mutex
	got  map[string][]byte // by client address
	done chan struct{}
}

func serve(t *testing.T, ln net.Listener) *server {
	t.Helper()
	s := &server{ln: ln, got: map[string][]byte{}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				for {
					n, err := c.Read(buf)
					s.mu.Lock()
					s.got[c.RemoteAddr().String()] = append(s.got[c.RemoteAddr().String()], buf[:n]...)
					s.mu.Unlock()
					if err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-s.done
	})
	return s
}

func (s *server) received(c net.Conn) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.got[c.LocalAddr().String()]...)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}

// dialFrom connects to addr from the local IP (any when ""). A connection
// the server refuses at once may already be reset when connect returns:
// that comes back as a closed connection.
func dialFrom(t *testing.T, addr, local string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second}
	if local != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
	}
	c, err := d.Dial("tcp", addr)
	if errors.Is(err, syscall.ECONNRESET) {
		return resetConn{}
	}
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// resetConn stands for a connection reset while it was being made.
type resetConn struct{ net.Conn }

// closedByPeer waits up to within for c to be closed by the server.
func closedByPeer(t *testing.T, c net.Conn, within time.Duration) bool {
	t.Helper()
	if _, ok := c.(resetConn); ok {
		return true
	}
	require.NoError(t, c.SetReadDeadline(time.Now().Add(within)))
	var b [64]byte
	for {
		_, err := c.Read(b[:])
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false
		}
		return true // EOF or reset
	}
}

func TestListenerPerSource(t *testing.T) {
	var counters Counters
	ln := NewListener(listen(t), ListenerOptions{TCPLimits: TCPLimits{MaxPerSource: 2}, Counters: &counters})
	serve(t, ln)
	addr := ln.Addr().String()

	c1 := dialFrom(t, addr, "127.0.0.1")
	c2 := dialFrom(t, addr, "127.0.0.1")
	require.Eventually(t, func() bool { return ln.Active() == 2 }, 5*time.Second, 5*time.Millisecond)
	c3 := dialFrom(t, addr, "127.0.0.1")
	assert.True(t, closedByPeer(t, c3, 5*time.Second), "the third connection from one source is closed")
	other := dialFrom(t, addr, "127.0.0.2")
	assert.False(t, closedByPeer(t, other, 100*time.Millisecond), "another source is not limited")
	assert.False(t, closedByPeer(t, c1, 50*time.Millisecond))
	assert.Equal(t, uint64(1), counters.Stats().Get(ReasonTCPLimit))

	require.NoError(t, c2.Close())
	require.Eventually(t, func() bool { return ln.Active() == 2 }, 5*time.Second, 5*time.Millisecond, "closing frees the place")
	c4 := dialFrom(t, addr, "127.0.0.1")
	assert.False(t, closedByPeer(t, c4, 100*time.Millisecond))
	assert.Equal(t, uint64(1), counters.Stats().Get(ReasonTCPLimit))
}

func TestListenerTotal(t *testing.T) {
	var counters Counters
	ln := NewListener(listen(t), ListenerOptions{TCPLimits: TCPLimits{MaxConnections: 2}, Counters: &counters})
	serve(t, ln)
	addr := ln.Addr().String()
	dialFrom(t, addr, "127.0.0.1")
	dialFrom(t, addr, "127.0.0.2")
	require.Eventually(t, func() bool { return ln.Active() == 2 }, 5*time.Second, 5*time.Millisecond)
	c := dialFrom(t, addr, "127.0.0.3")
	assert.True(t, closedByPeer(t, c, 5*time.Second))
	assert.Equal(t, uint64(1), counters.Stats().Get(ReasonTCPLimit))

	plain := LimitListener(listen(t), 1, 0)
	serve(t, plain)
	dialFrom(t, plain.Addr().String(), "")
	require.Eventually(t, func() bool { return plain.(*Listener).Active() == 1 }, 5*time.Second, 5*time.Millisecond)
	assert.True(t, closedByPeer(t, dialFrom(t, plain.Addr().String(), ""), 5*time.Second))
}

func TestListenerIdleTimeout(t *testing.T) {
	var counters Counters
	ln := NewListener(listen(t), ListenerOptions{TCPLimits: TCPLimits{IdleTimeout: 200 * time.Millisecond}, Counters: &counters})
	serve(t, ln)
	c := dialFrom(t, ln.Addr().String(), "")
	start := time.Now()
	assert.True(t, closedByPeer(t, c, 5*time.Second), "an idle connection is closed")
	assert.GreaterOrEqual(t, time.Since(start), 150*time.Millisecond)
	assert.Equal(t, uint64(1), counters.Stats().Get(ReasonTCPTimeout))
	require.Eventually(t, func() bool { return ln.Active() == 0 }, 5*time.Second, 5*time.Millisecond)

	// Traffic keeps it open.
	busy := dialFrom(t, ln.Addr().String(), "")
	for range 6 {
		_, err := busy.Write([]byte("\r\n\r\n"))
		require.NoError(t, err)
		assert.False(t, closedByPeer(t, busy, 80*time.Millisecond))
	}
}

func TestListenerReadTimeoutSlowLoris(t *testing.T) {
	var counters Counters
	ln := NewListener(listen(t), ListenerOptions{
		TCPLimits: TCPLimits{IdleTimeout: 10 * time.Second, ReadTimeout: 300 * time.Millisecond},
		Counters:  &counters,
	})
	srv := serve(t, ln)

	// A whole message, then another, each well within the read timeout:
	// the connection stays, for longer than the read timeout in total.
	good := dialFrom(t, ln.Addr().String(), "")
	msg := crlf("OPTIONS sip:a@b SIP/2.0\nl: 0\n\n")
	for range 5 {
		_, err := good.Write(msg)
		require.NoError(t, err)
		assert.False(t, closedByPeer(t, good, 100*time.Millisecond))
	}
	assert.Equal(t, string(msg)+string(msg)+string(msg)+string(msg)+string(msg), string(srv.received(good)), "bytes pass unchanged")

	// One octet every 50 ms never idles, and never finishes a message.
	slow := dialFrom(t, ln.Addr().String(), "")
	start := time.Now()
	closed := false
	for i := 0; i < 100 && !closed; i++ {
		if _, err := slow.Write(msg[i%len(msg) : i%len(msg)+1]); err != nil {
			closed = true
			break
		}
		closed = closedByPeer(t, slow, 50*time.Millisecond)
	}
	require.True(t, closed, "a slow-loris sender is cut off")
	assert.Less(t, time.Since(start), 3*time.Second)
	assert.GreaterOrEqual(t, time.Since(start), 250*time.Millisecond)
	assert.Equal(t, uint64(1), counters.Stats().Get(ReasonTCPTimeout))

	// Connecting and sending nothing: the first message is due within the
	// read timeout of the accept.
	mute := dialFrom(t, ln.Addr().String(), "")
	assert.True(t, closedByPeer(t, mute, 5*time.Second))
	assert.Equal(t, uint64(2), counters.Stats().Get(ReasonTCPTimeout))
}

func TestListenerMessageLimits(t *testing.T) {
	var counters Counters
	ln := NewListener(listen(t), ListenerOptions{Message: testLimits, Counters: &counters})
	srv := serve(t, ln)
	c := dialFrom(t, ln.Addr().String(), "")
	ok := crlf(invite)
	_, err := c.Write(ok)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(srv.received(c)) == len(ok) }, 5*time.Second, 5*time.Millisecond)
	_, err = c.Write(crlf(withHeader(invite, manyVias(10))))
	require.NoError(t, err)
	assert.True(t, closedByPeer(t, c, 5*time.Second))
	assert.Equal(t, uint64(1), counters.Stats().Get(ReasonTooManyVias))
	assert.Equal(t, string(ok), string(srv.received(c)), "the refused message never reached the reader")
	require.Eventually(t, func() bool { return ln.Active() == 0 }, 5*time.Second, 5*time.Millisecond)
}

func TestListenerAllow(t *testing.T) {
	var counters Counters
	ln := NewListener(listen(t), ListenerOptions{
		Allow:    func(src netip.Addr) bool { return src == netip.MustParseAddr("127.0.0.2") },
		Counters: &counters,
	})
	serve(t, ln)
	assert.True(t, closedByPeer(t, dialFrom(t, ln.Addr().String(), "127.0.0.1"), 5*time.Second))
	assert.False(t, closedByPeer(t, dialFrom(t, ln.Addr().String(), "127.0.0.2"), 100*time.Millisecond))
	assert.Equal(t, uint64(1), counters.Stats().Get(ReasonUntrusted))
}

// tempErrListener fails Accept with a temporary error a few times.
type tempErrListener struct {
	net.Listener
	fails int
}

type tempErr struct{}

func (tempErr) Error() string   { return "too many open files" }
func (tempErr) Temporary() bool { return true }
func (tempErr) Timeout() bool   { return false }

func (l *tempErrListener) Accept() (net.Conn, error) {
	if l.fails > 0 {
		l.fails--
		return nil, tempErr{}
	}
	return l.Listener.Accept()
}

func TestListenerRetriesTemporaryErrors(t *testing.T) {
	inner := listen(t)
	ln := NewListener(&tempErrListener{Listener: inner, fails: 3}, ListenerOptions{})
	defer ln.Close()
	go dialFrom(t, inner.Addr().String(), "")
	c, err := ln.Accept()
	require.NoError(t, err, "temporary errors are not returned to sipgo")
	c.Close()
	ln.Close()
	_, err = ln.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sipbalancer test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestListenerTLS(t *testing.T) {
	var counters Counters
	cert := selfSigned(t)
	inner := tls.NewListener(listen(t), &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	ln := NewListener(inner, ListenerOptions{
		TCPLimits: TCPLimits{ReadTimeout: 300 * time.Millisecond, IdleTimeout: 10 * time.Second},
		Message:   testLimits, Counters: &counters,
	})
	srv := serve(t, ln)

	// A handshake that never comes is bounded by the read timeout.
	raw := dialFrom(t, ln.Addr().String(), "")
	assert.True(t, closedByPeer(t, raw, 5*time.Second))
	assert.Equal(t, uint64(1), counters.Stats().Get(ReasonTCPTimeout))

	// The limits read the plaintext.
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test certificate
	require.NoError(t, err)
	defer c.Close()
	ok := crlf(invite)
	_, err = c.Write(ok)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return len(srv.received(c)) == len(ok) }, 5*time.Second, 5*time.Millisecond)
	_, err = c.Write(crlf(withHeader(invite, manyHeaders(30))))
	require.NoError(t, err)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.ReadAll(c)
	var ne net.Error
	assert.False(t, errors.As(err, &ne) && ne.Timeout(), "closed, not timed out: %v", err)
	assert.Equal(t, uint64(1), counters.Stats().Get(ReasonTooManyHeaders))
}
