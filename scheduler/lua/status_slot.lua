-- status_slot.lua — the status semaphore: fewer than 5 status.php requests in flight per login (the
-- provider answers error 9 to "five or more requests at once from different connections under the same
-- login"). Taken in addition to the caller's login slot, which must still be usable.
-- KEYS[1]  inflight ZSET (login slots: token → lease deadline, ms)
-- KEYS[2]  revoked ZSET (slots held when an error 2 came)
-- KEYS[3]  login HASH (account state)
-- KEYS[4]  status ZSET (token → lease deadline, ms)
-- ARGV[1]  token: the caller's login-slot token
-- ARGV[2]  now_ms ('' = the Redis server's clock)
-- ARGV[3]  lease_ms
-- ARGV[4]  cap (4)
-- Returns 1 when the status slot is taken (or renewed: the token held it already); 0 when cap status
-- requests are in flight; -1 when the account must not send now (stopped, backing off, quiet, or an
-- error 2 came since the login slot was taken); -2 when the token holds no live login slot.
local now, token = clock_ms(ARGV[2]), ARGV[1]
if tonumber(redis.call('ZSCORE', KEYS[1], token) or '0') <= now then return -2 end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('ZSCORE', KEYS[2], token) then return -1 end
local a = redis.call('HMGET', KEYS[3], 'state', 'backoff_until', 'quiet_until')
if a[1] == 'stopped' or tonumber(a[2] or '0') > now or tonumber(a[3] or '0') > now then return -1 end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local lease_until = int_s(now + tonumber(ARGV[3]))
if redis.call('ZSCORE', KEYS[4], token) then
  redis.call('ZADD', KEYS[4], lease_until, token)
  return 1
end
if redis.call('ZCARD', KEYS[4]) >= tonumber(ARGV[4]) then return 0 end
redis.call('ZADD', KEYS[4], lease_until, token)
return 1
