-- account.lua — what one answer of the provider means for the whole account (all workers).
-- KEYS[1]  account HASH
-- ARGV[1]  outcome: 'ok' | 'error' (a failed request) | 'block' (error 4) | 'auth' (error 2)
-- ARGV[2]  now_ms
-- ARGV[3]  reason (one line)
-- ARGV[4]  base_backoff_ms: first account-wide wait; doubles with each further error
-- ARGV[5]  max_backoff_ms
-- ARGV[6]  stop_after: errors in a row after which the account cools down (far below the provider's 100)
-- ARGV[7]  cooldown_ms
-- ARGV[8]  errors_before_backoff: ordinary errors in a row before the account backs off
-- Returns {state, backoff_until_ms, errors_in_a_row}.
local k, outcome, now = KEYS[1], ARGV[1], tonumber(ARGV[2])
if outcome == 'ok' then
  redis.call('HSET', k, 'verified', '1', 'errors_in_a_row', '0', 'level', '0')
  if redis.call('HGET', k, 'state') == 'cooldown' then redis.call('HSET', k, 'state', 'ok') end
  local s = redis.call('HMGET', k, 'state', 'backoff_until')
  return {s[1] or 'ok', s[2] or '0', '0'}
end
local streak = redis.call('HINCRBY', k, 'errors_in_a_row', 1)
redis.call('HSET', k, 'last_error', ARGV[3], 'last_error_ms', ARGV[2])
if outcome == 'auth' then
  redis.call('HSET', k, 'state', 'stopped', 'reason', ARGV[3], 'verified', '0', 'stopped_ms', ARGV[2])
  redis.call('HINCRBY', k, 'auth_errors', 1)
  return {'stopped', '0', tostring(streak)}
end
local wait = 0
if outcome == 'block' then
  local level = redis.call('HINCRBY', k, 'level', 1)
  wait = math.min(tonumber(ARGV[4]) * 2 ^ (level - 1), tonumber(ARGV[5]))
elseif streak >= tonumber(ARGV[8]) then
  wait = math.min(tonumber(ARGV[4]) * 2 ^ (streak - tonumber(ARGV[8])), tonumber(ARGV[5]))
end
local state = redis.call('HGET', k, 'state') or 'ok'
if streak >= tonumber(ARGV[6]) then
  wait = math.max(wait, tonumber(ARGV[7]))
  state = 'cooldown'
  redis.call('HSET', k, 'state', 'cooldown', 'reason', ARGV[3])
end
if wait > 0 then
  local until_ms = now + wait
  local old = tonumber(redis.call('HGET', k, 'backoff_until') or '0')
  if until_ms > old then
    redis.call('HSET', k, 'backoff_until', string.format('%d', until_ms))
    redis.call('HINCRBY', k, 'backoffs', 1)
  end
  return {state, string.format('%d', math.max(until_ms, old)), tostring(streak)}
end
return {state, redis.call('HGET', k, 'backoff_until') or '0', tostring(streak)}
