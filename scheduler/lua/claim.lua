-- claim.lua — the dispatcher's atomic claim of due batches (any number of beats may run it at once).
-- KEYS[1]  due ZSET     (member cid:n, score = due time, ms)
-- KEYS[2]  leased ZSET  (member cid:n, score = lease deadline, ms)
-- ARGV[1]  now_ms: '' = the server's clock (a value only for tests that step time)
-- ARGV[2]  window: most batches leased at once (keeps every worker busy, no more)
-- ARGV[3]  claim_lease_ms: time a claimed batch's task has to start before the sweeper takes it back
-- ARGV[4]  max_claim: most batches claimed by this call
-- Returns: the claimed members, oldest due first.
local now = clock_ms(ARGV[1])
local room = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[2])
local n = math.min(room, tonumber(ARGV[4]))
if n <= 0 then return {} end
local refs = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int_s(now), 'LIMIT', 0, n)
local deadline = now + tonumber(ARGV[3])
for _, ref in ipairs(refs) do
  redis.call('ZREM', KEYS[1], ref)
  redis.call('ZADD', KEYS[2], deadline, ref)
end
return refs
