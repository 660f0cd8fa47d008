-- acquire.lua — the login semaphore: fewer than 15 requests in flight per login, all workers together.
-- KEYS[1]  inflight ZSET (token → lease deadline, ms)
-- KEYS[2]  account HASH
-- ARGV[1]  token
-- ARGV[2]  now_ms
-- ARGV[3]  lease_until_ms: a worker that dies holding a slot gives it back at this time
-- ARGV[4]  cap (≤ 14)
-- Returns 1 when the slot is taken, 0 when the login is at its cap, -1 when the account must not send
-- now (stopped after error 2, or backing off): nothing is taken, the caller gives the batch back.
-- Until the account has had one successful answer (after a start or a wrong password), the cap is 1:
-- a wrong password then reaches the provider once, not 14 times at once — and the batches that were
-- already waiting for a slot when the account stopped never send (hence the state check here, atomic
-- with the take).
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local a = redis.call('HMGET', KEYS[2], 'verified', 'state', 'backoff_until')
if a[2] == 'stopped' or tonumber(a[3] or '0') > tonumber(ARGV[2]) then return -1 end
local cap = tonumber(ARGV[4])
if a[1] ~= '1' then cap = 1 end
if redis.call('ZCARD', KEYS[1]) >= cap then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
