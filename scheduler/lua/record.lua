-- record.lua — the ledger: a batch execution's outcome, applied at once to batch and campaign (fenced).
-- KEYS[1]  batch HASH
-- KEYS[2]  leased ZSET
-- KEYS[3]  due ZSET
-- KEYS[4]  campaign HASH
-- KEYS[5]  settle ZSET (the claim's index of batches to settle first)
-- (the campaign's lane index: named from KEYS[3], see lane_add in _lib.lua)
-- ARGV[1]  now_ms: '' = the server's clock (a value only for tests that step time)
-- ARGV[2]  ref
-- ARGV[3]  token
-- ARGV[4]  sent: recipients that reached the provider
-- ARGV[5]  failed: recipients that failed for good
-- ARGV[6]  sms: SMS parts the provider counted
-- ARGV[7]  cost_milli: cost reported by the provider, in thousandths of the account's currency
-- ARGV[8]  rows: report rows to append ("phone;state;id;parts;cost;code;reason\n" each)
-- ARGV[9]  remaining: comma-joined recipients still pending ("" = none)
-- ARGV[10] due_at_ms for the remaining: absolute, on the server's clock ('' or 0 = none)
-- ARGV[11] due_in_ms for the remaining: relative to now ('' = none); the later of the two counts,
--          now when neither is given
-- ARGV[12] settle flag for the remaining: '1' set, '0' clear, '' keep
-- ARGV[13] reason: last error (kept on the campaign), '' = none
-- ARGV[14] quarantine reason: '' = none; else the remaining recipients fail with it, counted in the
--          campaign's failed and quarantined (see begin.lua)
-- ARGV[15] cancelled: recipients that ended without a request (their rows are in ARGV[8]; '' = 0)
-- Returns {1, campaign_state} or {0, ''} when the execution no longer owns the batch.
-- Recording ends the run of executions without an outcome that begin counts toward a quarantine.
local now = clock_ms(ARGV[1])
local now_s = int_s(now)
local ref = ARGV[2]
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[3] then return {0, ''} end
local sent, failed = tonumber(ARGV[4]), tonumber(ARGV[5])
if sent > 0 then redis.call('HINCRBY', KEYS[4], 'sent', sent) end
if failed > 0 then redis.call('HINCRBY', KEYS[4], 'failed', failed) end
local cancelled = tonumber(ARGV[15] or '0') or 0
if cancelled > 0 then redis.call('HINCRBY', KEYS[4], 'cancelled', cancelled) end
if tonumber(ARGV[6]) > 0 then redis.call('HINCRBY', KEYS[4], 'sms', ARGV[6]) end
if tonumber(ARGV[7]) > 0 then redis.call('HINCRBY', KEYS[4], 'cost_milli', ARGV[7]) end
append_rows(KEYS[1], ARGV[8])
redis.call('HDEL', KEYS[1], 'unrecorded', 'last_error')
if ARGV[13] ~= '' then redis.call('HSET', KEYS[4], 'last_error', ARGV[13]) end
if ARGV[12] == '1' then redis.call('HSET', KEYS[1], 'settle', '1')
elseif ARGV[12] == '0' then redis.call('HDEL', KEYS[1], 'settle') end
redis.call('ZREM', KEYS[2], ref)
local remaining = ARGV[9]
if remaining ~= '' and ARGV[14] ~= '' then
  local n = count_phones(remaining)
  redis.call('HINCRBY', KEYS[4], 'failed', n)
  redis.call('HINCRBY', KEYS[4], 'quarantined', n)
  append_rows(KEYS[1], rows_for(remaining, 'failed', ARGV[14]))
  redis.call('HSET', KEYS[4], 'last_error', string.sub(ARGV[14], 1, 300))
  redis.call('HSET', KEYS[1], 'quarantined', ARGV[14])
  remaining = ''
end
local cstate = redis.call('HGET', KEYS[4], 'state')
if remaining ~= '' and cstate == 'cancelled' and redis.call('HGET', KEYS[1], 'settle') ~= '1' then
  redis.call('HINCRBY', KEYS[4], 'cancelled', count_phones(remaining))
  append_rows(KEYS[1], rows_for(remaining, 'cancelled'))
  remaining = ''
end
if remaining == '' then
  redis.call('HSET', KEYS[1], 'state', 'done', 'phones', '', 'owner', '')
  redis.call('HDEL', KEYS[1], 'settle')
else
  local due = now
  local at = tonumber(ARGV[10] ~= '' and ARGV[10] or '0')
  if at > due then due = at end
  if ARGV[11] ~= '' and now + tonumber(ARGV[11]) > due then due = now + tonumber(ARGV[11]) end
  redis.call('HSET', KEYS[1], 'state', 'queued', 'phones', remaining, 'owner', '', 'due', int_s(due))
  redis.call('ZADD', KEYS[3], due, ref)
  lane_add(KEYS[3], ref, due)
  if redis.call('HGET', KEYS[1], 'settle') == '1' then redis.call('ZADD', KEYS[5], due, ref) end
end
return {1, finish(KEYS[4], now_s) or ''}
