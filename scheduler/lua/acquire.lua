-- acquire.lua — the login semaphore: fewer than 15 requests in flight per login, all workers together.
-- KEYS[1]  inflight ZSET (token → lease deadline, ms)
-- KEYS[2]  account HASH
-- KEYS[3]  probe ZSET (token → lease deadline, ms): the one request of a process not yet proven
-- ARGV[1]  token
-- ARGV[2]  now_ms
-- ARGV[3]  lease_until_ms: a worker that dies holding a slot gives it back at this time
-- ARGV[4]  cap (≤ 14)
-- ARGV[5]  probe: '1' when the calling process has had no good answer with its credentials yet
-- Returns 1 when the slot is taken, 0 when the login is at its cap (or another probe is out), -1 when
-- the account must not send now (stopped after error 2, or backing off): nothing is taken, the caller
-- gives the batch back.
-- A wrong password reaches the provider once, not once per slot: until the account has had one
-- successful answer (after a start or a wrong password) the cap is 1; and a process whose credentials
-- are not proven yet (just started, perhaps with a new wrong password while the account is proven with
-- the old one) sends alone among such processes. The batches that were waiting for a slot when the
-- account stopped never send: the state check is atomic with the take.
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
local a = redis.call('HMGET', KEYS[2], 'verified', 'state', 'backoff_until')
if a[2] == 'stopped' or tonumber(a[3] or '0') > tonumber(ARGV[2]) then return -1 end
local cap = tonumber(ARGV[4])
if a[1] ~= '1' then cap = 1 end
if redis.call('ZCARD', KEYS[1]) >= cap then return 0 end
if ARGV[5] == '1' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[2])
  if redis.call('ZCARD', KEYS[3]) >= 1 then return 0 end
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
