-- acquire.lua — the login semaphore: fewer than 15 requests in flight per login, all workers together.
-- KEYS[1]  inflight ZSET (token → lease deadline, ms)
-- KEYS[2]  account HASH
-- ARGV[1]  token
-- ARGV[2]  now_ms
-- ARGV[3]  lease_until_ms: a worker that dies holding a slot gives it back at this time
-- ARGV[4]  cap (≤ 14)
-- Returns 1 when the slot is taken, 0 when the login is at its cap.
-- Until the account has had one successful answer (after a start or a wrong password), the cap is 1:
-- a wrong password then reaches the provider once, not 14 times at once.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local cap = tonumber(ARGV[4])
if redis.call('HGET', KEYS[2], 'verified') ~= '1' then cap = 1 end
if redis.call('ZCARD', KEYS[1]) >= cap then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
