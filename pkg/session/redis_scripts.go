package session

import "github.com/redis/go-redis/v9"

// The Redis store changes a dialog and the active sets it belongs to with
// Lua scripts, so that each change is atomic however many instances write
// at once. All keys a script touches share one hash tag (see the key layout
// in redis_keys.go): KEYS names the dialog and the shard's node set, and the
// active zsets, whose names depend on the node stored in the dialog, are
// built inside the script from the active prefix passed in ARGV. They are in
// the same slot, which is what Redis Cluster requires of a script.
//
// Times are Unix milliseconds of the instances' clocks, never of the Redis
// server's, so that every instance judges expiry alike and a queued write
// means what it meant when it was made. A write carries two: now, when the
// Store call was made (liveness is judged at that instant, so a write
// delayed by an outage has the effect it would have had), and wall, when it
// is flushed (key TTLs are set relative to it, so a key lives exactly until
// the binding's expiry). Only commands of Redis 4.0 and later are used.

// writeScript applies one Bind ("b"), Confirm ("c"), Touch ("t") or Release
// ("r") with the semantics of the memory store. Applying the same write twice
// in a row has the effect of applying it once, which makes the writer's
// retries safe. Only Bind writes the Via (v), replacing it (with "" when the
// Bind has none); the other ops keep it, except that Confirm of a Call-ID
// with no live binding starts a fresh dialog without one.
//
//	KEYS[1] dialog key        KEYS[2] node set of the shard
//	ARGV[1] op                ARGV[2] Call-ID          ARGV[3] active prefix
//	ARGV[4] now               ARGV[5] wall             ARGV[6] expiry
//	ARGV[7] node              ARGV[8] attempt          ARGV[9] outbound (0/1)
//	ARGV[10] Via sent-by (Bind; may be empty)
//
// It returns 1 if the write took effect and 0 if it found no live binding
// (Touch, Release).
var writeScript = redis.NewScript(luaExtend + `
local d, nodes = KEYS[1], KEYS[2]
local op, cid, ap = ARGV[1], ARGV[2], ARGV[3]
local now, wall, exp = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local cur = redis.call('HMGET', d, 'n', 's', 'x')
local onode, ostate = cur[1], cur[2]
local live = cur[3] and tonumber(cur[3]) > now

local function settl(e)
  if e <= wall then redis.call('DEL', d) else redis.call('PEXPIRE', d, e - wall) end
end
local function inactive(node)
  if node then redis.call('ZREM', ap .. node, cid) end
end
local function active(node, e)
  if e <= wall then inactive(node) return end
  local z = ap .. node
  redis.call('ZADD', z, e, cid)
  extend(z, e - wall)
  redis.call('SADD', nodes, node)
  extend(nodes, e - wall)
end

if op == 'b' then
  if ostate == '2' then inactive(onode) end
  redis.call('HSET', d, 'n', ARGV[7], 'a', ARGV[8], 's', '1', 'o', ARGV[9], 'x', ARGV[6], 'v', ARGV[10] or '')
  settl(exp)
  return 1
elseif op == 'c' then
  local node = ARGV[7]
  if ostate == '2' and onode ~= node then inactive(onode) end
  if not live then
    redis.call('DEL', d)
    redis.call('HSET', d, 'a', '0', 'o', '0')
  end
  redis.call('HSET', d, 'n', node, 's', '2', 'x', ARGV[6])
  settl(exp)
  active(node, exp)
  return 1
elseif op == 't' then
  if not live or ostate == '3' then return 0 end
  if exp <= tonumber(cur[3]) then return 1 end
  redis.call('HSET', d, 'x', ARGV[6])
  settl(exp)
  if ostate == '2' then active(onode, exp) end
  return 1
elseif op == 'r' then
  if not live then return 0 end
  if ostate == '2' then inactive(onode) end
  redis.call('HSET', d, 's', '3', 'x', ARGV[6])
  settl(exp)
  return 1
end
return redis.error_reply('ERR sipbalancer: unknown op ' .. tostring(op))
`)

// sweepScript trims the expired members of a shard's active zsets, forgets
// nodes with none left, and returns the live count of each remaining node as
// a flat [node, count, ...] array.
//
//	KEYS[1] node set of the shard
//	ARGV[1] active prefix     ARGV[2] now
var sweepScript = redis.NewScript(`
local out = {}
for _, n in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local z = ARGV[1] .. n
  redis.call('ZREMRANGEBYSCORE', z, '-inf', ARGV[2])
  local c = redis.call('ZCARD', z)
  if c == 0 then
    redis.call('SREM', KEYS[1], n)
  else
    out[#out + 1] = n
    out[#out + 1] = c
  end
end
return out
`)

// rehomeScript moves a live binding to a new node if, and only if, it is
// still on the node the caller saw die, and returns the owner after the call:
// the new node, the owner another instance chose first, or "" if there is no
// live binding. Every other field (attempt, direction, Via) stays.
//
//	KEYS[1] dialog key        KEYS[2] node set of the shard
//	ARGV[1] Call-ID           ARGV[2] active prefix    ARGV[3] now
//	ARGV[4] wall              ARGV[5] from node        ARGV[6] to node
var rehomeScript = redis.NewScript(luaExtend + `
local cur = redis.call('HMGET', KEYS[1], 'n', 's', 'x')
if not cur[3] or tonumber(cur[3]) <= tonumber(ARGV[3]) then return '' end
if cur[1] ~= ARGV[5] then return cur[1] end
redis.call('HSET', KEYS[1], 'n', ARGV[6])
if cur[2] == '2' then
  redis.call('ZREM', ARGV[2] .. ARGV[5], ARGV[1])
  local left = tonumber(cur[3]) - tonumber(ARGV[4])
  if left > 0 then
    local z = ARGV[2] .. ARGV[6]
    redis.call('ZADD', z, cur[3], ARGV[1])
    extend(z, left)
    redis.call('SADD', KEYS[2], ARGV[6])
    extend(KEYS[2], left)
  end
end
return ARGV[6]
`)

// luaExtend defines extend(key, ms): make key live at least ms more
// milliseconds. A longer TTL is kept; a key without one gets one.
const luaExtend = `
local function extend(k, ms)
  local t = redis.call('PTTL', k)
  if t == -1 or (t >= 0 and t < ms) then redis.call('PEXPIRE', k, ms) end
end
`
