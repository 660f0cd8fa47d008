-- delivery/cut.lua — the final states queued per batch become webhook events: one event per batch and
-- cut, with a deterministic id ('d:<ref>:<seq>'), due at once.
-- KEYS[1]  webhook-new HASH (ref -> "phone,code,err,ts;" items)
-- KEYS[2]  webhook events HASH (id -> "d|<created ms>|<ref>|<items>")
-- KEYS[3]  webhook due ZSET
-- KEYS[4]  webhook tries HASH (id -> "attempts,first_ms")
-- KEYS[5]  webhook sequence HASH (ref -> events cut so far)
-- ARGV[1]  now_ms ('' = the Redis server's clock)
-- ARGV[2]  the most batches to cut
-- ARGV[3]  the most items in one event
-- Returns the number of events made.
local now = clock_ms(ARGV[1])
local now_s = int_s(now)
local max_items = tonumber(ARGV[3])
local refs = redis.call('HKEYS', KEYS[1])
local made = 0
for j = 1, math.min(#refs, tonumber(ARGV[2])) do
  local ref = refs[j]
  local items = redis.call('HGET', KEYS[1], ref) or ''
  redis.call('HDEL', KEYS[1], ref)
  local chunk, n = {}, 0
  local function emit()
    if n == 0 then return end
    local seq = redis.call('HINCRBY', KEYS[5], ref, 1)
    local id = 'd:' .. ref .. ':' .. seq
    redis.call('HSET', KEYS[2], id, 'd|' .. now_s .. '|' .. ref .. '|' .. table.concat(chunk))
    redis.call('HSET', KEYS[4], id, '0,' .. now_s)
    redis.call('ZADD', KEYS[3], now_s, id)
    made = made + 1
    chunk, n = {}, 0
  end
  for item in string.gmatch(items, '[^;]+;') do
    n = n + 1
    chunk[n] = item
    if n >= max_items then emit() end
  end
  emit()
end
return made
