-- cancel.lua — cancels a campaign: a chunk of its batches that wait (queued or parked, not leased,
-- nothing to settle) have their recipients cancelled at once; what is in flight settles normally and
-- what is leased is cancelled by begin/record. Idempotent.
-- KEYS[1]  campaign HASH
-- KEYS[2]  due ZSET
-- KEYS[3]  leased ZSET
-- KEYS[4]  campaign's parked SET
-- KEYS[4+i] batch HASH of ARGV[1+i]
-- (the campaign's lane index and its lane's ZSETs: named from KEYS[2], see lane_add in _lib.lua)
-- ARGV[1]  now_ms: '' = the server's clock (a value only for tests that step time)
-- ARGV[1+i] ref
-- Returns {campaign state, recipients cancelled by this call}.
local now_s = int_s(clock_ms(ARGV[1]))
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'', 0} end
if state == 'completed' or state == 'failed' then return {state, 0} end
if state ~= 'cancelled' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'cancelled_ms', now_s)
end
local n = 0
for i = 2, #ARGV do
  local bkey, ref = KEYS[3 + i], ARGV[i]
  local b = redis.call('HMGET', bkey, 'state', 'phones', 'settle')
  if (b[1] == 'queued' or b[1] == 'parked') and b[3] ~= '1'
     and not redis.call('ZSCORE', KEYS[3], ref) then
    local c = count_phones(b[2])
    n = n + c
    append_rows(bkey, rows_for(b[2], 'cancelled'))
    redis.call('HSET', bkey, 'state', 'done', 'phones', '')
    if redis.call('ZREM', KEYS[2], ref) == 1 then lane_remove(KEYS[2], ref) end
    redis.call('SREM', KEYS[4], ref)
  elseif b[1] == 'parked' and b[3] == '1' then
    -- it may have reached the provider: settle first (begin), then record cancels the rest
    redis.call('SREM', KEYS[4], ref)
    redis.call('HSET', bkey, 'state', 'queued', 'owner', '')
    redis.call('ZADD', KEYS[2], now_s, ref)
    lane_add(KEYS[2], ref, now_s)
  end
end
-- A campaign with nothing left in its lane index leaves its lane now, not at the claim's next visit.
local cid = redis.call('HGET', KEYS[1], 'id')
if cid then lane_leave_if_empty(KEYS[2], cid) end
if n > 0 then redis.call('HINCRBY', KEYS[1], 'cancelled', n) end
return {finish(KEYS[1], now_s) or state, n}
