package session

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestTokenRoundTrip(t *testing.T) {
	s, err := NewSigner([]byte("secret"))
	require.NoError(t, err)
	tests := []struct {
		name     string
		tok      Token
		callID   string
		fromTag  string
		verifyAs string // tag presented at verification
		wantErr  bool
	}{
		{name: "inbound", tok: Token{NodeID: "fs1"}, callID: "abc@host", fromTag: "t1", verifyAs: "t1"},
		{name: "outbound", tok: Token{NodeID: "fs-2_b", Outbound: true}, callID: "x", fromTag: "tag", verifyAs: "tag"},
		{name: "wrong tag", tok: Token{NodeID: "fs1"}, callID: "c", fromTag: "t1", verifyAs: "t2", wantErr: true},
		{name: "odd call-id", tok: Token{NodeID: "fs1"}, callID: "a b;c=d@[::1]\u00e9", fromTag: "f", verifyAs: "f"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := s.Sign(tc.tok, tc.callID, tc.fromTag)
			require.True(t, strings.HasPrefix(v, tc.tok.NodeID+"."))
			got, err := s.Verify(v, tc.callID, tc.verifyAs)
			if tc.wantErr {
				require.ErrorIs(t, err, ErrBadToken)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.tok, got)
		})
	}
}

func TestTokenRejectsTampering(t *testing.T) {
	s, _ := NewSigner([]byte("secret"))
	other, _ := NewSigner([]byte("other"))
	v := s.Sign(Token{NodeID: "fs1"}, "call", "tag")
	bad := []struct {
		name, value, callID string
		signer              *Signer
	}{
		{"other node", strings.Replace(v, "fs1", "fs2", 1), "call", s},
		{"flipped direction", strings.Replace(v, ".i.", ".o.", 1), "call", s},
		{"other call", v, "call2", s},
		{"other secret", v, "call", other},
		{"truncated", v[:len(v)-1], "call", s},
		{"empty", "", "call", s},
		{"no mac", "fs1.i", "call", s},
		{"bad node id", "f s.i.AAAAAAAAAAAAAAAA", "call", s},
		{"bad dir", "fs1.x." + v[len(v)-16:], "call", s},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.signer.Verify(tc.value, tc.callID, "tag")
			require.ErrorIs(t, err, ErrBadToken)
		})
	}
}

func TestValidNodeID(t *testing.T) {
	for id, want := range map[string]bool{
		"fs1": true, "FS_1-a": true, "": false, "a.b": false, "a b": false,
		strings.Repeat("a", 64): true, strings.Repeat("a", 65): false,
	} {
		require.Equal(t, want, ValidNodeID(id), id)
	}
}

func TestNewSignerEmptySecret(t *testing.T) {
	_, err := NewSigner(nil)
	require.Error(t, err)
}

func TestSignVerifyAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	s, _ := NewSigner([]byte("secret"))
	v := s.Sign(Token{NodeID: "fs1"}, "call-id-1234", "tag-5678")
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := s.Verify(v, "call-id-1234", "tag-5678"); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs, "Verify must not allocate")
}

func BenchmarkTokenSign(b *testing.B) {
	s, _ := NewSigner([]byte("secret"))
	b.ReportAllocs()
	for b.Loop() {
		s.Sign(Token{NodeID: "fs1"}, "a84b4c76e66710@pc33.atlanta.example.com", "1928301774")
	}
}

func BenchmarkTokenVerify(b *testing.B) {
	s, _ := NewSigner([]byte("secret"))
	v := s.Sign(Token{NodeID: "fs1"}, "a84b4c76e66710@pc33.atlanta.example.com", "1928301774")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Verify(v, "a84b4c76e66710@pc33.atlanta.example.com", "1928301774"); err != nil {
			b.Fatal(err)
		}
	}
}

// FuzzTokenVerify: Verify never panics on any value, Call-ID or tag, and a
// token verifies only for the call and tag it was signed for.
func FuzzTokenVerify(f *testing.F) {
	s, _ := NewSigner([]byte("fuzz"))
	good := s.Sign(Token{NodeID: "fs1"}, "call@host", "tag1")
	f.Add(good, "call@host", "tag1")
	f.Add(good, "call@host", "tag2")
	f.Add("fs1.o.AAAAAAAAAAAAAAAA", "x", "y")
	f.Add("..", "", "")
	f.Add(strings.Repeat("a", 300)+".i."+strings.Repeat("b", 16), "c", "t")
	f.Fuzz(func(t *testing.T, value, callID, tag string) {
		tok, err := s.Verify(value, callID, tag)
		if err != nil {
			return
		}
		// Whatever verifies must round-trip to the same value.
		if got := s.Sign(tok, callID, tag); got != value {
			t.Fatalf("verified %q but it signs as %q", value, got)
		}
	})
}
