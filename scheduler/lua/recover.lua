-- recover.lua — after the Redis server restarted (its last second of writes may be lost), marks one
-- batch that could have been sent as "settle before sending" and fences off every old execution.
-- KEYS[1]  batch HASH
-- KEYS[2]  leased ZSET
-- KEYS[3]  due ZSET
-- ARGV[1]  ref
-- ARGV[2]  settle_after_ms: when any request sent before the restart is surely over
-- ARGV[3]  horizon_ms: batches due after this cannot have been sent (their due time had not come)
-- Returns 1 when the batch was marked, 0 otherwise.
local b = redis.call('HMGET', KEYS[1], 'state', 'due')
if not b[1] or b[1] == 'done' or b[1] == 'planned' then return 0 end
local due_score = redis.call('ZSCORE', KEYS[3], ARGV[1])
if due_score and tonumber(due_score) > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], 'settle', '1', 'owner', '', 'settle_after', ARGV[2])
if b[1] == 'sending' then redis.call('HSET', KEYS[1], 'state', 'queued') end
if b[1] ~= 'parked' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  local at = tonumber(ARGV[2])
  if due_score and tonumber(due_score) > at then at = tonumber(due_score) end
  redis.call('ZADD', KEYS[3], at, ARGV[1])
end
return 1
