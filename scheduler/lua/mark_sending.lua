-- mark_sending.lua — the send intent, written before the request leaves (fenced).
-- KEYS[1]  batch HASH
-- KEYS[2]  leased ZSET
-- ARGV[1]  ref
-- ARGV[2]  token
-- ARGV[3]  now_ms
-- ARGV[4]  settle_after_ms: when this request is surely over (now + timeout + margin)
-- ARGV[5]  lease_until_ms: the execution's lease, extended to cover the request
-- Returns 1 when the request may leave; 0 when this execution lost the batch (do not send).
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return 0 end
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'state', 'sending', 'sent_at', ARGV[3], 'settle_after', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
return 1
