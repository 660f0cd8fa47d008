-- take.lua — from a free login slot to a request that may leave, in one round trip: the slot
-- (acquire.lua), the stop list and the flood guard for every recipient (flood.lua), then, when every one
-- is admitted and none is stopped, the request dedup and the send intent (launch.lua; the slot was just
-- taken, so its last check is the take's own). The caller built the request for all the recipients
-- before it waited for the slot, so nothing is built between the slot and the POST.
-- KEYS[1..4] inflight ZSET, login HASH, probe ZSET, revoked ZSET (acquire.lua's KEYS[1..4])
-- KEYS[5]  the stop list HASH
-- KEYS[6]  the request's dedup STRING (Keys.send_request)
-- KEYS[7]  batch HASH
-- KEYS[8]  leased ZSET
-- KEYS[9..8+n] the recipients' flood STRINGs, in order
-- ARGV[1]  now_ms ('' = the Redis server's clock)
-- ARGV[2]  token, ARGV[3] slot lease_ms, ARGV[4] cap, ARGV[5] probe ('1'/'0') (acquire.lua's)
-- ARGV[6]  ref, ARGV[7] dedup window ms, ARGV[8] settle_margin_ms, ARGV[9] the execution's lease_ms
-- ARGV[10] flood limit, ARGV[11] flood gap_ms
-- ARGV[12..11+n] the recipients' stop-list fields, in order
-- Returns {0} no slot free (nothing taken); {-1} the account must not send (nothing taken); else the
-- slot is the caller's: {1, sent_ms, settle_after_ms} send now (flood counted, dedup set, intent
-- written); {2, wait_ms} the identical request left less than the window ago; {3} the execution lost
-- the batch; {4, s_1..s_n, w_1..w_n} some recipient is stop-listed (s_i = 1) or held by the flood guard
-- (w_i > 0, the time it may be sent from): the admitted ones are counted, nothing else is written, and
-- the caller builds the request again for them (launch.lua).
local now, token = clock_ms(ARGV[1]), ARGV[2]
local got = slot_acquire({KEYS[1], KEYS[2], KEYS[3], KEYS[4]}, token, now, ARGV[3], tonumber(ARGV[4]), ARGV[5])
if got ~= 1 then return {got} end
local n = #KEYS - 8
local fields = {}
for i = 1, n do fields[i] = ARGV[11 + i] end
local stopped = redis.call('HMGET', KEYS[5], unpack(fields))
local limit, gap = tonumber(ARGV[10]), tonumber(ARGV[11])
local all = true
local flags, waits = {}, {}
for i = 1, n do
  if stopped[i] then
    flags[i], waits[i], all = 1, 0, false
  else
    flags[i] = 0
    waits[i] = flood_admit(KEYS[8 + i], now, limit, gap)
    if waits[i] ~= 0 then all = false end
  end
end
if not all then
  local out = {4}
  for i = 1, n do out[1 + i] = flags[i] end
  for i = 1, n do out[1 + n + i] = waits[i] end
  return out
end
local ttl = redis.call('PTTL', KEYS[6])
if ttl ~= -2 then return {2, math.max(ttl, 1)} end
local sending = batch_mark_sending(KEYS[7], KEYS[8], ARGV[6], token, now, ARGV[8], ARGV[9])
if sending[1] ~= 1 then return {3} end
redis.call('SET', KEYS[6], '1', 'PX', tonumber(ARGV[7]))
return sending
