-- sweep.lua — takes back the batches whose lease ran out (worker killed, message lost).
-- KEYS[1]  leased ZSET
-- KEYS[2]  due ZSET
-- KEYS[2+i] batch HASH of ARGV[1+i]
-- (the campaigns' lane indexes: named from KEYS[2], see lane_add in _lib.lua)
-- ARGV[1]  now_ms: '' = the server's clock (a value only for tests that step time)
-- ARGV[1+i] ref of a batch whose lease may have run out (the caller's hint; checked here)
-- Returns {batches put back in the due-queue, now_ms}.
-- A batch caught 'sending' becomes due only once its request is surely over; begin then settles it.
local now = clock_ms(ARGV[1])
local n = 0
for i = 2, #ARGV do
  local ref, bkey = ARGV[i], KEYS[1 + i]
  local lease = redis.call('ZSCORE', KEYS[1], ref)
  if lease and tonumber(lease) <= now then
    redis.call('ZREM', KEYS[1], ref)
    local b = redis.call('HMGET', bkey, 'state', 'settle_after')
    if b[1] and b[1] ~= 'done' and b[1] ~= 'parked' then
      redis.call('HSET', bkey, 'owner', '')
      local due = now
      if b[1] == 'sending' then due = math.max(due, tonumber(b[2] or '0')) end
      redis.call('ZADD', KEYS[2], due, ref)
      lane_add(KEYS[2], ref, due)
      n = n + 1
    end
  end
end
return {n, now}
