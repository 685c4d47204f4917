package session

import (
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// Key layout of the Redis store. With prefix p (RedisOptions.KeyPrefix,
// default "sipb") and a shard tag T:
//
//	p:d:{T}:<Call-ID>     hash    one dialog: n node, a attempt, s state
//	                              (1 early, 2 confirmed, 3 released),
//	                              o outbound (0/1), x expiry (Unix ms),
//	                              v Via sent-by of the INVITE (host:port;
//	                              written by Bind, kept by every other
//	                              write; absent or empty when unknown);
//	                              the key expires with the binding
//	p:active:{T}:<node>   zset    Call-ID → expiry (Unix ms) of every
//	                              Confirmed binding of the shard on node
//	p:nodes:{T}           set     the nodes that have an active zset in
//	                              the shard, so counting needs no SCAN
//
// Every Call-ID belongs to one of keyShards shards (xxhash64 of the Call-ID,
// which every instance computes alike). A shard's keys carry the same hash
// tag {T}, so in a Redis Cluster they sit in one hash slot: that is what lets
// a single Lua script update a dialog and the active sets it moves between
// atomically, in every deployment. The tags are chosen (tagFor) so that the
// shards' slots are spread evenly over the 16384 slots, and so over the
// masters of any cluster whose masters own contiguous slot ranges.
//
// Call-IDs and node IDs go into keys and members as they are: Redis keys are
// binary-safe, and since the tag comes first, braces or any other byte in a
// Call-ID cannot change the slot or collide with another key. The prefix may
// not contain braces (Validate), for the same reason.
//
// Active-call counts are derived from the zsets: members whose score (the
// binding's expiry) has passed are trimmed, and the count of a node is the
// sum over shards of the members left. A lost BYE or a crashed instance
// therefore delays a count's decrease to the binding's expiry, but a count
// can neither go negative nor stick. The zsets and node sets carry a TTL as
// long as their longest-lived member, so even with no instance left to trim
// them they disappear.
const keyShards = 64

// redisSlots is the number of hash slots of a Redis Cluster.
const redisSlots = 16384

// shardKeys are the key names of one shard, built once.
type shardKeys struct {
	dialog string // dialog key prefix: p:d:{T}:
	active string // active zset prefix: p:active:{T}:
	nodes  string // node set key: p:nodes:{T}
}

// keyspace holds the keys of every shard for one prefix.
type keyspace struct {
	shards [keyShards]shardKeys
}

func newKeyspace(prefix string) *keyspace {
	ks := &keyspace{}
	for i, tag := range shardTags() {
		t := "{" + tag + "}"
		ks.shards[i] = shardKeys{
			dialog: prefix + ":d:" + t + ":",
			active: prefix + ":active:" + t + ":",
			nodes:  prefix + ":nodes:" + t,
		}
	}
	return ks
}

// shard returns the keys of the shard callID belongs to.
func (ks *keyspace) shard(callID string) *shardKeys {
	return &ks.shards[xxhash.Sum64String(callID)%keyShards]
}

// shardTags returns, for each shard i, the smallest decimal number whose
// hash slot lies in the i-th of keyShards equal slot ranges. The result only
// depends on keyShards, so every instance derives the same tags.
func shardTags() [keyShards]string {
	var tags [keyShards]string
	left := keyShards
	for n := 0; left > 0; n++ {
		tag := strconv.Itoa(n)
		i := int(keySlot(tag)) * keyShards / redisSlots
		if tags[i] == "" {
			tags[i] = tag
			left--
		}
	}
	return tags
}

// keySlot is the Redis Cluster hash slot of a key with no hash tag: CRC16
// (XMODEM: polynomial 0x1021, initial value 0) modulo 16384.
func keySlot(key string) uint16 {
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc % redisSlots
}

// DialogKey is the Redis key holding callID's binding (for operators and
// tests inspecting Redis).
func (r *Redis) DialogKey(callID string) string {
	return r.keys.shard(callID).dialog + callID
}
