package dispatcher

import "github.com/cespare/xxhash/v2"

// Key is what the hash policy hashes: the Call-ID, or the value of a
// configured header. The proxy computes it once per call at the edge, so no
// policy ever hashes a string; the other policies ignore it.
type Key struct {
	Hash uint64
}

// KeyFromString hashes s with xxhash64 (seed 0). The function is fixed and
// stable across processes and architectures: every sipbalancer instance must
// map the same Call-ID to the same node, so it must never change.
func KeyFromString(s string) Key {
	return Key{Hash: xxhash.Sum64String(s)}
}
