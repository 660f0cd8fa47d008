-- resume.lua — resumes a paused campaign and puts a chunk of its parked batches back in the due-queue.
-- KEYS[1]  campaign HASH
-- KEYS[2]  campaign's parked SET
-- KEYS[3]  due ZSET
-- KEYS[3+i] batch HASH of ARGV[1+i]
-- (the campaign's lane index: named from KEYS[3], see lane_add in _lib.lua)
-- ARGV[1]  now_ms: '' = the server's clock (a value only for tests that step time)
-- ARGV[1+i] ref of a parked batch
-- Returns {campaign state, batches moved}.
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'', 0} end
if state == 'paused' then
  state = redis.call('HGET', KEYS[1], 'paused_from') or 'running'
  redis.call('HSET', KEYS[1], 'state', state)
  redis.call('HDEL', KEYS[1], 'pause_reason', 'paused_from', 'paused_ms')
end
local moved, now = 0, clock_ms(ARGV[1])
for i = 2, #ARGV do
  local bkey, ref = KEYS[2 + i], ARGV[i]
  if redis.call('SREM', KEYS[2], ref) == 1 then
    local due = tonumber(redis.call('HGET', bkey, 'due') or '0')
    redis.call('HSET', bkey, 'state', 'queued', 'owner', '')
    redis.call('ZADD', KEYS[3], math.max(due, now), ref)
    lane_add(KEYS[3], ref, math.max(due, now))
    moved = moved + 1
  end
end
return {state, moved}
