package session

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
)

// A Record-Route token names the node that owns a call, so that any instance
// holding the same secret routes the call's in-dialog requests without a
// lookup. It travels as one URI parameter value:
//
//	<node-id>.<dir>.<mac>
//
// dir is "i" for a call that came in from a carrier and "o" for a call a node
// originated through the balancer. mac is the first 12 bytes of
// HMAC-SHA256(secret, "sb1|node|dir|call-id|from-tag"), base64url without
// padding (16 characters). Binding the MAC to the Call-ID and the From tag of
// the dialog-creating request means a token lifted from one call is worthless
// on another, and it tells the direction of an in-dialog request (see Verify).
const (
	macBytes  = 12
	macChars  = 16 // base64url of 12 bytes
	tokenVers = "sb1"
)

// ErrBadToken is returned for a token that does not parse or verify.
var ErrBadToken = errors.New("session: bad record-route token")

// Token is what a Record-Route token says about a call.
type Token struct {
	NodeID string
	// Outbound is true when the node originated the call.
	Outbound bool
}

// Signer signs and verifies Record-Route tokens. It is safe for concurrent
// use.
type Signer struct {
	pool sync.Pool // of *macState
}

// macState is a pooled HMAC with a scratch buffer, so that signing and
// verifying do not allocate.
type macState struct {
	h   hash.Hash
	buf []byte
	sum [sha256.Size]byte
}

// NewSigner returns a Signer for secret. An empty secret is an error; use
// RandomSecret for a single instance that shares nothing.
func NewSigner(secret []byte) (*Signer, error) {
	if len(secret) == 0 {
		return nil, errors.New("session: empty token secret")
	}
	key := append([]byte(nil), secret...)
	s := &Signer{}
	s.pool.New = func() any {
		return &macState{h: hmac.New(sha256.New, key), buf: make([]byte, 0, 256)}
	}
	return s, nil
}

// RandomSecret returns 32 random bytes.
func RandomSecret() []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("session: crypto/rand failed: %v", err))
	}
	return b
}

// ValidNodeID reports whether id may appear in a token: 1-64 characters of
// [A-Za-z0-9_-].
func ValidNodeID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Sign returns the token value for t on the call callID whose
// dialog-creating request carried From tag fromTag.
func (s *Signer) Sign(t Token, callID, fromTag string) string {
	dir := "i"
	if t.Outbound {
		dir = "o"
	}
	var mac [macChars]byte
	s.mac(mac[:], t.NodeID, dir, callID, fromTag)
	var b strings.Builder
	b.Grow(len(t.NodeID) + 3 + macChars)
	b.WriteString(t.NodeID)
	b.WriteByte('.')
	b.WriteString(dir)
	b.WriteByte('.')
	b.Write(mac[:])
	return b.String()
}

// Verify checks value against the call's Call-ID and a tag, and returns what
// the token says. An in-dialog request carries the dialog-creating request's
// From tag either as its own From tag (it travels caller → callee) or as its
// To tag (callee → caller): verifying with one, then the other, tells the
// direction without any state.
func (s *Signer) Verify(value, callID, fromTag string) (Token, error) {
	node, rest, ok := strings.Cut(value, ".")
	if !ok || !ValidNodeID(node) {
		return Token{}, ErrBadToken
	}
	dir, got, ok := strings.Cut(rest, ".")
	if !ok || (dir != "i" && dir != "o") || len(got) != macChars {
		return Token{}, ErrBadToken
	}
	var want [macChars]byte
	s.mac(want[:], node, dir, callID, fromTag)
	if !hmac.Equal(want[:], []byte(got)) {
		return Token{}, ErrBadToken
	}
	return Token{NodeID: node, Outbound: dir == "o"}, nil
}

func (s *Signer) mac(dst []byte, node, dir, callID, fromTag string) {
	m := s.pool.Get().(*macState)
	// Fields are length-prefixed so that no two inputs collide.
	b := m.buf[:0]
	b = appendField(b, tokenVers)
	b = appendField(b, node)
	b = appendField(b, dir)
	b = appendField(b, callID)
	b = appendField(b, fromTag)
	m.h.Reset()
	m.h.Write(b)
	sum := m.h.Sum(m.sum[:0])
	base64.RawURLEncoding.Encode(dst, sum[:macBytes])
	if cap(b) <= 4096 {
		m.buf = b[:0]
	}
	s.pool.Put(m)
}

func appendField(b []byte, v string) []byte {
	l := len(v)
	b = append(b, byte(l>>24), byte(l>>16), byte(l>>8), byte(l))
	return append(b, v...)
}
