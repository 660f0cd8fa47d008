-- acquire.lua — the login semaphore: fewer than 15 requests in flight per login, all workers of every
-- namespace together, closed while the account must not send.
-- KEYS[1]  inflight ZSET (token → lease deadline, ms)
-- KEYS[2]  login HASH (account state)
-- KEYS[3]  probe ZSET (token → lease deadline, ms): the one request of credentials not proven yet
-- KEYS[4]  revoked ZSET (slots held when an error 2 came; tidied here)
-- ARGV[1]  token
-- ARGV[2]  now_ms ('' = the Redis server's clock)
-- ARGV[3]  lease_ms: a worker that dies holding a slot gives it back this long after it took it
--          (a live holder renews it)
-- ARGV[4]  cap: the configured cap (≤ 14)
-- ARGV[5]  probe: '1' when the caller's credentials have had no good answer yet
-- Returns 1 when the slot is taken; 0 when the login is at its cap (or another probe is out); -1 when
-- the account must not send now (stopped after error 2, backing off or cooling down, or quiet after a
-- Redis restart): nothing is taken, the caller gives the batch back.
-- The cap is the smallest of: the configured cap, the adaptive cap (lowered while the provider answers
-- slowly, see account.lua), and 1 until the account has had one good answer since its last error 2 —
-- so a wrong password reaches the provider once, not once per slot. Credentials not proven yet (a new
-- process, perhaps with a new wrong password while the account is proven with the old one) send alone
-- among such callers. The gate is checked atomically with the take.
local now = clock_ms(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local a = redis.call('HMGET', KEYS[2], 'state', 'backoff_until', 'quiet_until', 'verified', 'adaptive_cap')
if a[1] == 'stopped' or tonumber(a[2] or '0') > now or tonumber(a[3] or '0') > now then return -1 end
local cap = tonumber(ARGV[4])
local adaptive = tonumber(a[5] or '')
if adaptive then cap = math.min(cap, math.max(1, math.floor(adaptive))) end
if a[4] ~= '1' then cap = 1 end
if redis.call('ZCARD', KEYS[1]) >= cap then return 0 end
local lease_until = int_s(now + tonumber(ARGV[3]))
if ARGV[5] == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= 1 then return 0 end
  redis.call('ZADD', KEYS[3], lease_until, ARGV[1])
end
redis.call('ZADD', KEYS[1], lease_until, ARGV[1])
return 1
