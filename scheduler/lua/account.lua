-- account.lua — what one answer, or the lack of one, means for the whole account (every worker of
-- every namespace on the login).
-- KEYS[1]  login HASH (account state)
-- KEYS[2]  inflight ZSET (login slots: token → lease deadline, ms)
-- KEYS[3]  revoked ZSET (slots that may carry no new request)
-- ARGV[1]  outcome: 'ok' (a good answer) | 'unknown' (no answer in time, or a cut one: our timeout,
--          not the provider's error) | 'error' (an error answer of the provider: counted toward its
--          100-errors-in-a-row block) | 'block' (error 4) | 'auth' (error 2)
-- ARGV[2]  now_ms ('' = the Redis server's clock)
-- ARGV[3]  reason (one line)
-- ARGV[4]  base_backoff_ms: first account-wide wait; doubles with each further error
-- ARGV[5]  max_backoff_ms
-- ARGV[6]  stop_after: errors in a row after which the account cools down (far below the provider's 100)
-- ARGV[7]  cooldown_ms
-- ARGV[8]  errors_before_backoff: ordinary errors in a row before the account backs off
-- ARGV[9]  latency_ms of an 'ok' answer ('' = not measured)
-- ARGV[10] slow_answer_ms: an 'ok' answer at least this slow lowers the adaptive cap as 'unknown' does
-- ARGV[11] max_cap: the configured cap, the adaptive cap's ceiling
-- ARGV[12] decrease: the factor a slow answer multiplies the adaptive cap by (multiplicative decrease)
-- ARGV[13] hold_ms: after a decrease, slow answers within this long do not decrease it again (they are
--          answers to requests sent before the decrease)
-- ARGV[14] slow_share: the cap is lowered only while at least this share of the recent answers was slow
--          or missing (a provider in trouble), not for a late answer now and then (its slot is spent
--          already, and fewer requests in flight would only cost the fast ones)
-- ARGV[15] share_weight: the weight of one answer in that share (an exponential moving average)
-- Returns {state, backoff_until_ms, errors_in_a_row, adaptive_cap ('' = never lowered)}.
-- A slow provider slows the account down (fewer requests in flight, one slot back per cap's worth of
-- fast answers), it does not stop it: 'unknown' never counts toward the error streak.
local k, outcome, now = KEYS[1], ARGV[1], clock_ms(ARGV[2])
local max_cap = tonumber(ARGV[11])

-- The share of recent answers that were slow or missing, with this one (1 = slow, 0 = fast).
local function observe(slow)
  local w = tonumber(ARGV[15])
  local share = (tonumber(redis.call('HGET', k, 'slow_share') or '') or 0) * (1 - w) + (slow and w or 0)
  redis.call('HSET', k, 'slow_share', string.format('%.4f', share))
  return share
end

local function slow_down()
  redis.call('HINCRBY', k, 'slow_answers', 1)
  if observe(true) < tonumber(ARGV[14]) then return end
  local slowed = tonumber(redis.call('HGET', k, 'slowed_ms') or '')
  if slowed and now - slowed < tonumber(ARGV[13]) then return end
  local cap = tonumber(redis.call('HGET', k, 'adaptive_cap') or '') or max_cap
  cap = math.max(1, math.min(cap, max_cap) * tonumber(ARGV[12]))
  redis.call('HSET', k, 'adaptive_cap', string.format('%.3f', cap), 'slowed_ms', int_s(now))
end

local function speed_up()
  observe(false)
  local cap = tonumber(redis.call('HGET', k, 'adaptive_cap') or '')
  if not cap or cap >= max_cap then return end
  redis.call('HSET', k, 'adaptive_cap', string.format('%.3f', math.min(max_cap, cap + 1 / cap)))
end

local function verdict(state, streak)
  local s = redis.call('HMGET', k, 'backoff_until', 'adaptive_cap')
  return {state, s[1] or '0', tostring(streak), s[2] or ''}
end

local state = redis.call('HGET', k, 'state') or 'ok'
if outcome == 'ok' then
  -- An answer to a request sent before the stop proves nothing about the settings now.
  if state == 'stopped' then return verdict(state, redis.call('HGET', k, 'errors_in_a_row') or '0') end
  if state == 'cooldown' then state = 'ok' end
  redis.call('HSET', k, 'state', state, 'verified', '1', 'errors_in_a_row', '0', 'level', '0')
  local latency = tonumber(ARGV[9])
  if latency and latency >= tonumber(ARGV[10]) then slow_down() else speed_up() end
  return verdict(state, 0)
end
if outcome == 'unknown' then
  slow_down()
  return verdict(state, redis.call('HGET', k, 'errors_in_a_row') or '0')
end
local streak = redis.call('HINCRBY', k, 'errors_in_a_row', 1)
redis.call('HSET', k, 'last_error', ARGV[3], 'last_error_ms', int_s(now))
if outcome == 'auth' then
  redis.call('HSET', k, 'state', 'stopped', 'reason', ARGV[3], 'verified', '0', 'stopped_ms', int_s(now))
  redis.call('HDEL', k, 'proven_fp')
  redis.call('HINCRBY', k, 'auth_errors', 1)
  -- Every slot held now may carry no new request: it was taken before the gate closed.
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('ZUNIONSTORE', KEYS[3], 2, KEYS[3], KEYS[2], 'AGGREGATE', 'MAX')
  return verdict('stopped', streak)
end
local wait = 0
if outcome == 'block' then
  local level = redis.call('HINCRBY', k, 'level', 1)
  wait = math.min(tonumber(ARGV[4]) * 2 ^ (level - 1), tonumber(ARGV[5]))
elseif streak >= tonumber(ARGV[8]) then
  wait = math.min(tonumber(ARGV[4]) * 2 ^ (streak - tonumber(ARGV[8])), tonumber(ARGV[5]))
end
if streak >= tonumber(ARGV[6]) then
  wait = math.max(wait, tonumber(ARGV[7]))
  state = 'cooldown'
  redis.call('HSET', k, 'state', 'cooldown', 'reason', ARGV[3])
end
if wait > 0 then
  local until_ms = now + wait
  local old = tonumber(redis.call('HGET', k, 'backoff_until') or '0')
  if until_ms > old then
    redis.call('HSET', k, 'backoff_until', int_s(until_ms))
    redis.call('HINCRBY', k, 'backoffs', 1)
  end
end
return verdict(state, streak)
