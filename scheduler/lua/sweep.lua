-- sweep.lua — takes back one batch whose lease ran out (worker killed, message lost).
-- KEYS[1]  batch HASH
-- KEYS[2]  leased ZSET
-- KEYS[3]  due ZSET
-- ARGV[1]  ref
-- ARGV[2]  now_ms
-- Returns 1 when the batch went back to the due-queue, 0 when there was nothing to take back.
-- A batch caught 'sending' becomes due only once its request is surely over; begin then settles it.
local lease = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not lease or tonumber(lease) > tonumber(ARGV[2]) then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
local b = redis.call('HMGET', KEYS[1], 'state', 'settle_after')
if not b[1] or b[1] == 'done' or b[1] == 'parked' then return 0 end
redis.call('HSET', KEYS[1], 'owner', '')
local due = tonumber(ARGV[2])
if b[1] == 'sending' then due = math.max(due, tonumber(b[2] or '0')) end
redis.call('ZADD', KEYS[3], due, ARGV[1])
return 1
