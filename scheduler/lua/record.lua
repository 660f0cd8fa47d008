-- record.lua — the ledger: a batch execution's outcome, applied at once to batch and campaign (fenced).
-- KEYS[1]  batch HASH
-- KEYS[2]  leased ZSET
-- KEYS[3]  due ZSET
-- KEYS[4]  campaign HASH
-- ARGV[1]  ref
-- ARGV[2]  token
-- ARGV[3]  now_ms
-- ARGV[4]  sent: recipients that reached the provider
-- ARGV[5]  failed: recipients that failed for good
-- ARGV[6]  sms: SMS parts the provider counted
-- ARGV[7]  cost_milli: cost reported by the provider, in thousandths of the account's currency
-- ARGV[8]  rows: report rows to append ("phone;state;id;parts;cost;code;reason\n" each)
-- ARGV[9]  remaining: comma-joined recipients still pending ("" = none)
-- ARGV[10] due_at_ms for the remaining
-- ARGV[11] settle flag for the remaining: '1' set, '0' clear, '' keep
-- ARGV[12] reason: last error (kept on the campaign), '' = none
-- Returns {1, campaign_state} or {0, ''} when the execution no longer owns the batch.
local ref = ARGV[1]
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then return {0, ''} end
local sent, failed = tonumber(ARGV[4]), tonumber(ARGV[5])
if sent > 0 then redis.call('HINCRBY', KEYS[4], 'sent', sent) end
if failed > 0 then redis.call('HINCRBY', KEYS[4], 'failed', failed) end
if tonumber(ARGV[6]) > 0 then redis.call('HINCRBY', KEYS[4], 'sms', ARGV[6]) end
if tonumber(ARGV[7]) > 0 then redis.call('HINCRBY', KEYS[4], 'cost_milli', ARGV[7]) end
append_rows(KEYS[1], ARGV[8])
if ARGV[12] ~= '' then redis.call('HSET', KEYS[4], 'last_error', ARGV[12]) end
if ARGV[11] == '1' then redis.call('HSET', KEYS[1], 'settle', '1')
elseif ARGV[11] == '0' then redis.call('HDEL', KEYS[1], 'settle') end
redis.call('ZREM', KEYS[2], ref)
local remaining = ARGV[9]
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
  redis.call('HSET', KEYS[1], 'state', 'queued', 'phones', remaining, 'owner', '', 'due', ARGV[10])
  redis.call('ZADD', KEYS[3], ARGV[10], ref)
end
return {1, finish(KEYS[4], ARGV[3]) or ''}
