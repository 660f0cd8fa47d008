-- hold.lua — may a held login slot carry a new request now? Optionally renews the slot's lease (and
-- the same token's probe and status-slot leases), so that a slot held through a long settle or send
-- never runs out while its holder lives.
-- KEYS[1]  inflight ZSET (token → lease deadline, ms)
-- KEYS[2]  probe ZSET
-- KEYS[3]  status ZSET (status semaphore)
-- KEYS[4]  revoked ZSET (slots held when an error 2 came)
-- KEYS[5]  login HASH (account state)
-- ARGV[1]  token
-- ARGV[2]  now_ms ('' = the Redis server's clock)
-- ARGV[3]  lease_ms: renew every lease of the token to now + lease_ms (never shortened); '' = only check
-- Returns 1 when the slot may carry a new request (renewed when asked); 0 when it is still held but must
-- not (an error 2 came since it was taken, or the account is stopped, backing off or quiet) — its
-- lease is renewed all the same, because a request it already carries is still in flight and counts;
-- -1 when the slot is lost (its lease ran out, or it was released): nothing is renewed, send nothing.
local now, token = clock_ms(ARGV[2]), ARGV[1]
local lease = tonumber(redis.call('ZSCORE', KEYS[1], token) or '0')
if lease <= now then return -1 end
if ARGV[3] ~= '' then
  local lease_until = int_s(now + tonumber(ARGV[3]))
  for i = 1, 4 do redis.call('ZADD', KEYS[i], 'XX', 'GT', lease_until, token) end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
if redis.call('ZSCORE', KEYS[4], token) then return 0 end
local a = redis.call('HMGET', KEYS[5], 'state', 'backoff_until', 'quiet_until')
if a[1] == 'stopped' or tonumber(a[2] or '0') > now or tonumber(a[3] or '0') > now then return 0 end
return 1
