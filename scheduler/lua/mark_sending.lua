-- mark_sending.lua — the send intent, written before the request leaves (fenced).
-- KEYS[1]  batch HASH
-- KEYS[2]  leased ZSET
-- ARGV[1]  now_ms: '' = the server's clock (a value only for tests that step time)
-- ARGV[2]  ref
-- ARGV[3]  token
-- ARGV[4]  settle_margin_ms: how long after it leaves the request is surely over at the provider
--          (the request's hard deadline plus the settle horizon: scheduler.ledger.settle_margin_ms)
-- ARGV[5]  lease_ms: the execution's lease from now, extended to cover the request
-- Returns {1, sent_ms, settle_after_ms} when the request may leave (sent_ms: the server's time of the
-- intent; settle_after_ms = sent_ms + settle_margin_ms); {0, now_ms, 0} when this execution lost the
-- batch (do not send).
local now = clock_ms(ARGV[1])
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[3] then return {0, now, 0} end
if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then return {0, now, 0} end
local settle_after = now + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'state', 'sending', 'sent_at', int_s(now), 'settle_after', int_s(settle_after))
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[5]), ARGV[2])
return {1, now, settle_after}
