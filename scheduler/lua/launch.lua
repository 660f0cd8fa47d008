-- launch.lua — the last step before a send request leaves, in one round trip: the request dedup, the
-- slot's last check (hold.lua) and the send intent (mark_sending.lua), in that order, each as its own
-- script decides; nothing is written unless all three let the request go.
-- KEYS[1]  the request's dedup STRING (Keys.send_request: the login and the request's fingerprint)
-- KEYS[2..6] inflight, probe, status, revoked ZSETs and the login HASH (as hold.lua's KEYS[1..5])
-- KEYS[7]  batch HASH
-- KEYS[8]  leased ZSET
-- ARGV[1]  now_ms ('' = the Redis server's clock)
-- ARGV[2]  token (the slot's and the execution's)
-- ARGV[3]  ref
-- ARGV[4]  the dedup window (ms): an identical request is refused this long after this one
-- ARGV[5]  slot lease_ms (hold.lua's ARGV[3])
-- ARGV[6]  settle_margin_ms, ARGV[7] the execution's lease_ms (mark_sending.lua's ARGV[4], ARGV[5])
-- Returns {1, sent_ms, settle_after_ms}: send (the dedup key is set, the slot renewed, the intent
-- written); {2, wait_ms}: the identical request left less than the window ago; {3}: the slot may carry
-- no new request (its leases renewed if it is still held, as hold.lua does); {0}: the execution lost
-- the batch.
local now, token = clock_ms(ARGV[1]), ARGV[2]
local ttl = redis.call('PTTL', KEYS[1])
if ttl ~= -2 then return {2, math.max(ttl, 1)} end
if slot_hold({KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}, token, now, ARGV[5]) ~= 1 then return {3} end
local sending = batch_mark_sending(KEYS[7], KEYS[8], ARGV[3], token, now, ARGV[6], ARGV[7])
if sending[1] == 1 then redis.call('SET', KEYS[1], '1', 'PX', tonumber(ARGV[4])) end
return sending
