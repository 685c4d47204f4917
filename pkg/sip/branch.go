package sip

import (
	"strconv"
	"strings"
	"sync"

	"github.com/cespare/xxhash/v2"
	"github.com/emiago/sipgo/sip"
)

// Our Via branches look like
//
//	z9hG4bKsb<16 hex>x<8 hex>
//
// The first part is a keyed hash of the inbound transaction (its branch,
// Call-ID, CSeq number, the method of the transaction — INVITE for a CANCEL —
// and the failover attempt). It is deterministic, so a retransmitted ACK gets
// the same branch (a stateless forward, §16.11) and any instance that shares
// the token secret derives the branch of an INVITE another instance forwarded,
// which is what a CANCEL must carry. The second part is the §16.3 step 4 loop
// hash: a request that comes back to us with our Via and the same hash has
// looped (482); a different hash is a spiral and is forwarded.
const branchPrefix = sip.RFC3261BranchMagicCookie + "sb"

type brancher struct {
	salt []byte
	pool sync.Pool // *[]byte scratch
}

func newBrancher(secret []byte) *brancher {
	b := &brancher{salt: append([]byte("sipbalancer-branch\x00"), secret...)}
	b.pool.New = func() any { s := make([]byte, 0, 512); return &s }
	return b
}

// branch returns the Via branch for forwarding in (attempt is the failover
// attempt, 0 otherwise). txMethod is the method of the transaction the branch
// belongs to: the request's, except INVITE for a CANCEL.
func (br *brancher) branch(in *sip.Request, txMethod string, attempt int) string {
	bp := br.pool.Get().(*[]byte)
	b := (*bp)[:0]
	b = append(b, br.salt...)
	if v := in.Via(); v != nil {
		if id, ok := v.Params.Get("branch"); ok {
			b = append(b, id...)
		}
		// RFC 2543 clients send no branch: the sent-by keeps their
		// transactions apart.
		b = append(b, 0)
		b = append(b, v.Host...)
		b = strconv.AppendInt(b, int64(v.Port), 10)
	}
	b = append(b, 0)
	if c := in.CallID(); c != nil {
		b = append(b, *c...)
	}
	b = append(b, 0)
	if c := in.CSeq(); c != nil {
		b = strconv.AppendUint(b, uint64(c.SeqNo), 10)
	}
	b = append(b, 0)
	b = append(b, txMethod...)
	b = append(b, 0)
	b = strconv.AppendInt(b, int64(attempt), 10)
	h := xxhash.Sum64(b)
	loop := loopHash(b[:0], in)
	*bp = b[:0]
	br.pool.Put(bp)

	var out [len(branchPrefix) + 16 + 1 + 8]byte
	o := append(out[:0], branchPrefix...)
	o = appendHex(o, h, 16)
	o = append(o, 'x')
	o = appendHex(o, uint64(loop), 8)
	return string(o)
}

// loopHash hashes what §16.3 step 4 says identifies a request for loop
// detection: Request-URI, From tag, To tag, Call-ID, CSeq number and the
// Proxy-Require values. scratch is reused.
func loopHash(scratch []byte, in *sip.Request) uint32 {
	b := scratch[:0]
	b = appendURI(b, &in.Recipient)
	b = append(b, 0)
	if f := in.From(); f != nil {
		t, _ := f.Params.Get("tag")
		b = append(b, t...)
	}
	b = append(b, 0)
	if t := in.To(); t != nil {
		tag, _ := t.Params.Get("tag")
		b = append(b, tag...)
	}
	b = append(b, 0)
	if c := in.CallID(); c != nil {
		b = append(b, *c...)
	}
	b = append(b, 0)
	if c := in.CSeq(); c != nil {
		b = strconv.AppendUint(b, uint64(c.SeqNo), 10)
	}
	for _, h := range in.Headers() {
		if strings.EqualFold(h.Name(), "Proxy-Require") {
			b = append(b, 0)
			b = append(b, h.Value()...)
		}
	}
	return uint32(xxhash.Sum64(b))
}

// appendURI writes the parts of a URI that identify it, without allocating.
func appendURI(b []byte, u *sip.Uri) []byte {
	b = append(b, u.Scheme...)
	b = append(b, ':')
	if r := u.Raw(); r != "" {
		return append(b, r...)
	}
	b = append(b, u.User...)
	b = append(b, '@')
	b = append(b, u.Host...)
	b = append(b, ':')
	b = strconv.AppendInt(b, int64(u.Port), 10)
	for _, kv := range u.UriParams {
		b = append(b, ';')
		b = append(b, kv.K...)
		b = append(b, '=')
		b = append(b, kv.V...)
	}
	return b
}

const hexDigits = "0123456789abcdef"

func appendHex(b []byte, v uint64, n int) []byte {
	for i := n - 1; i >= 0; i-- {
		b = append(b, hexDigits[(v>>(uint(i)*4))&0xf])
	}
	return b
}

// isOurBranch reports whether a Via branch was written by a sipbalancer
// instance, and returns its loop hash part.
func isOurBranch(branch string) (loop string, ok bool) {
	if len(branch) != len(branchPrefix)+16+1+8 || !strings.HasPrefix(branch, branchPrefix) {
		return "", false
	}
	if branch[len(branchPrefix)+16] != 'x' {
		return "", false
	}
	return branch[len(branchPrefix)+17:], true
}

// loopHashString renders a loop hash as in a branch.
func loopHashString(in *sip.Request) string {
	var scratch [256]byte
	var out [8]byte
	return string(appendHex(out[:0], uint64(loopHash(scratch[:0], in)), 8))
}
