-- budget.lua — a campaign's budget (max-cost): reserve what one batch's request will cost, or pause the
-- campaign when it would pass the budget; or set the budget. One script, so that the check and the
-- reservation (or the pause) are one step for every worker at once: the budget can never be overshot.
-- KEYS[1]  campaign HASH (reads cost_milli, max_cost_milli, state; a pause writes state, paused_from,
--          pause_reason, paused_ms — the fields of pause.lua, so that status and resume work as after
--          an operator's pause)
-- KEYS[2]  the campaign's reservations HASH (batch ref -> milli reserved by that batch's request)
-- ARGV[1]  mode: 'reserve' or 'max'
-- mode 'reserve':
--   ARGV[2]  now_ms: '' = the server's clock (a value only for tests that step time)
--   ARGV[3]  the batch ref (the reservation's field: a re-run of the batch replaces its own)
--   ARGV[4]  estimate: what this batch's request will cost (milli, integer >= 0)
--   ARGV[5]  max: the budget (milli); '' = the campaign's max_cost_milli (none there = no budget)
--   ARGV[6]  ttl_ms of the reservations HASH, renewed here
-- mode 'max':
--   ARGV[2]  the new budget (milli); '' = no budget any more
-- Returns {ok, spent, reserved, max, state}: ok 1 = reserved (or the budget set), 0 = it would pass the
-- budget (nothing reserved; the campaign paused if it was queued or running), -1 = no such campaign;
-- spent = cost_milli; reserved = what the campaign's reservations hold now (this batch's included when
-- ok); max = the budget (-1 = none); state = the campaign's state after the call.

-- An amount in milli as the account's currency, shortest exact form: 12500 -> '12.5', 15000 -> '15'.
local function money(milli)
  local s = string.format('%d.%03d', math.floor(milli / 1000), milli % 1000)
  s = string.gsub(s, '0+$', '')
  s = string.gsub(s, '%.$', '')
  return s
end

local ckey, rkey, mode = KEYS[1], KEYS[2], ARGV[1]
local c = redis.call('HMGET', ckey, 'state', 'cost_milli', 'max_cost_milli')
local state = c[1]
if not state then return {-1, 0, 0, -1, ''} end

if mode == 'max' then
  if ARGV[2] == '' then
    redis.call('HDEL', ckey, 'max_cost_milli')
  else
    redis.call('HSET', ckey, 'max_cost_milli', ARGV[2])
  end
  return {1, tonumber(c[2] or '0'), 0, tonumber(ARGV[2] ~= '' and ARGV[2] or '-1'), state}
end

local spent = tonumber(c[2] or '0')
local ref, estimate = ARGV[3], tonumber(ARGV[4])
local max = -1
if ARGV[5] ~= '' then max = tonumber(ARGV[5]) elseif c[3] and c[3] ~= '' then max = tonumber(c[3]) end

-- The other batches' requests in flight (this ref's own earlier reservation, left by a crashed
-- execution of the same batch, is replaced, never counted twice). Few fields: one per batch between
-- its reserve and its release.
local others = 0
local held = redis.call('HGETALL', rkey)
for i = 1, #held, 2 do
  if held[i] ~= ref then others = others + tonumber(held[i + 1]) end
end

if max < 0 or spent + others + estimate <= max then
  redis.call('HSET', rkey, ref, string.format('%d', estimate))
  redis.call('PEXPIRE', rkey, ARGV[6])
  return {1, spent, others + estimate, max, state}
end

redis.call('HDEL', rkey, ref)
if state == 'queued' or state == 'running' then
  local reason = 'budget: spent ' .. money(spent)
  if others > 0 then reason = reason .. ' + in flight ' .. money(others) end
  reason = reason .. ' + this batch ' .. money(estimate) .. ' would pass max-cost ' .. money(max)
      .. '; raise max-cost, then resume'
  redis.call('HSET', ckey, 'state', 'paused', 'paused_from', state, 'pause_reason', reason,
             'paused_ms', int_s(clock_ms(ARGV[2])))
  state = 'paused'
end
return {0, spent, others, max, state}
