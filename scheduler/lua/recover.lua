-- recover.lua — after the Redis server restarted (its last second of writes may be lost), marks the
-- batches that could have been sent as "settle before sending" and fences off every old execution.
-- KEYS[1]  leased ZSET
-- KEYS[2]  due ZSET
-- KEYS[2+i] batch HASH of ARGV[3+i]
-- (the campaigns' lane indexes: named from KEYS[2], see lane_add in _lib.lua)
-- ARGV[1]  now_ms: '' = the server's clock (a value only for tests that step time)
-- ARGV[2]  settle_margin_ms: from now, when any request sent before the restart is surely over
-- ARGV[3]  horizon_ms: batches due later than now + this cannot have been sent (their time had not come)
-- ARGV[3+i] ref of a batch of a campaign that may have unfinished batches (cancelled ones included:
--          what the provider already took must be found before the rest is counted cancelled)
-- Returns {batches marked, now_ms, settle_after_ms}.
local now = clock_ms(ARGV[1])
local settle_after = now + tonumber(ARGV[2])
local horizon = now + tonumber(ARGV[3])
local marked = 0
for i = 4, #ARGV do
  local ref, bkey = ARGV[i], KEYS[i - 1]
  local b = redis.call('HMGET', bkey, 'state', 'settle_after')
  if b[1] and b[1] ~= 'done' and b[1] ~= 'planned' then
    local due_score = redis.call('ZSCORE', KEYS[2], ref)
    if not (due_score and tonumber(due_score) > horizon) then
      -- A settle wait already longer (a request of this server's life) is kept.
      local after = math.max(settle_after, tonumber(b[2] or '0'))
      redis.call('HSET', bkey, 'settle', '1', 'owner', '', 'settle_after', int_s(after))
      if b[1] == 'sending' then redis.call('HSET', bkey, 'state', 'queued') end
      if b[1] ~= 'parked' then
        redis.call('ZREM', KEYS[1], ref)
        local at = after
        if due_score and tonumber(due_score) > at then at = tonumber(due_score) end
        redis.call('ZADD', KEYS[2], at, ref)
        lane_add(KEYS[2], ref, at)
      end
      marked = marked + 1
    end
  end
end
return {marked, now, settle_after}
