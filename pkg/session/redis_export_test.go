package session

// Internals of the Redis store, exported for the tests of package
// session_test.

// RedisShardTags returns the hash tags of the key shards.
func RedisShardTags() []string {
	tags := shardTags()
	return tags[:]
}

// RedisKeySlot returns the Redis Cluster hash slot of a key without a hash
// tag, as computed by the store.
func RedisKeySlot(key string) uint16 { return keySlot(key) }

// RedisDialogKey returns the key of callID's dialog hash.
func RedisDialogKey(r *Redis, callID string) string {
	return r.keys.shard(callID).dialog + callID
}

// ErrRehomePending is the cause of a Rehome refused because of unwritten
// writes.
var ErrRehomePending = errRehomePending
