-- claim.lua — the dispatcher's atomic claim of due batches (any number of beats may run it at once).
-- KEYS[1]  due ZSET     (member cid:n, score = due time, ms)
-- KEYS[2]  leased ZSET  (member cid:n, score = lease deadline, ms)
-- ARGV[1]  now_ms: '' = the server's clock (a value only for tests that step time)
-- ARGV[2]  window: most batches leased at once (keeps every worker busy, no more)
-- ARGV[3]  claim_lease_ms: time a claimed batch's task has to start before the sweeper takes it back
-- KEYS[3]  settle ZSET (index of batches queued "settle first": member cid:n, score = due time, ms)
-- ARGV[4]  max_claim: most batches claimed by this call
-- Returns: the claimed members: batches due to be settled first, then the others, oldest due first.
-- Settling first: a campaign's fresh batches are all due at its start, so in due order the batches
-- whose outcome is unknown would wait behind every one of them and be settled in one tail at the end;
-- taken first, they are settled alongside the sending (status.php has slots of its own).
local now = clock_ms(ARGV[1])
local room = tonumber(ARGV[2]) - redis.call('ZCARD', KEYS[2])
local n = math.min(room, tonumber(ARGV[4]))
if n <= 0 then return {} end
local deadline = now + tonumber(ARGV[3])
local refs = {}
for _, ref in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', int_s(now), 'LIMIT', 0, n)) do
  redis.call('ZREM', KEYS[3], ref)
  local due = tonumber(redis.call('ZSCORE', KEYS[1], ref) or '')
  if due and due <= now then  -- still queued and due (the index entry may be stale)
    redis.call('ZREM', KEYS[1], ref)
    redis.call('ZADD', KEYS[2], deadline, ref)
    refs[#refs + 1] = ref
  end
end
if #refs < n then
  for _, ref in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', int_s(now), 'LIMIT', 0, n - #refs)) do
    redis.call('ZREM', KEYS[1], ref)
    redis.call('ZADD', KEYS[2], deadline, ref)
    refs[#refs + 1] = ref
  end
end
return refs
