-- begin.lua — a task execution takes a batch (fenced by a fresh token), or learns why it must not.
-- KEYS[1]  batch HASH
-- KEYS[2]  leased ZSET
-- KEYS[3]  due ZSET
-- KEYS[4]  campaign HASH
-- KEYS[5]  account HASH
-- KEYS[6]  campaign's parked SET
-- ARGV[1]  ref (cid:n)
-- ARGV[2]  now_ms
-- ARGV[3]  token of this execution
-- ARGV[4]  exec_lease_ms: how long this execution may hold the batch
-- Returns one of:
--   {'ok', phones, settle, attempts}   this execution owns the batch
--   {'missing'} {'done'} {'busy'}       nothing to do (stale or duplicate message)
--   {'cancelled', n}                    the campaign was cancelled: n pending recipients cancelled
--   {'parked'}                          campaign paused or account stopped: kept for resume
--   {'deferred', until_ms}              not before until_ms (account back-off, settle wait)
local ref, now, token = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local b = redis.call('HMGET', KEYS[1], 'state', 'owner', 'phones', 'settle', 'attempts', 'settle_after')
local state = b[1]
if not state then
  redis.call('ZREM', KEYS[2], ref)
  redis.call('ZREM', KEYS[3], ref)
  return {'missing'}
end
if state == 'done' then
  redis.call('ZREM', KEYS[2], ref)
  return {'done'}
end
if state == 'parked' or state == 'planned' then return {'busy'} end
-- A stale or repeated message for a batch that was put back for later: not before its due time.
local due_score = redis.call('ZSCORE', KEYS[3], ref)
if due_score and tonumber(due_score) > now then return {'deferred', due_score} end
local lease = tonumber(redis.call('ZSCORE', KEYS[2], ref) or '0')
if b[2] and b[2] ~= '' and lease > now then return {'busy'} end
local settle = b[4] or ''
if state == 'sending' then
  -- The last attempt's request may have reached the provider and its execution is gone:
  -- settle through status.php, but only once that request is surely over.
  settle = '1'
  redis.call('HSET', KEYS[1], 'settle', '1', 'state', 'queued', 'owner', '')
end
if settle == '1' then
  -- Also for a batch marked by recovery (state 'queued'): a stray or redelivered message must not
  -- settle it before the request sent before the restart is surely over.
  local after = tonumber(b[6] or '0')
  if after > now then
    redis.call('HSET', KEYS[1], 'owner', '')
    redis.call('ZREM', KEYS[2], ref)
    redis.call('ZADD', KEYS[3], after, ref)
    return {'deferred', b[6]}
  end
end
local cstate = redis.call('HGET', KEYS[4], 'state')
if cstate == 'cancelled' and settle ~= '1' then
  local n = count_phones(b[3])
  if n > 0 then redis.call('HINCRBY', KEYS[4], 'cancelled', n) end
  append_rows(KEYS[1], rows_for(b[3], 'cancelled'))
  redis.call('HSET', KEYS[1], 'state', 'done', 'phones', '', 'owner', '')
  redis.call('ZREM', KEYS[2], ref)
  redis.call('ZREM', KEYS[3], ref)
  finish(KEYS[4], ARGV[2])
  return {'cancelled', n}
end
local a = redis.call('HMGET', KEYS[5], 'state', 'backoff_until')
if cstate == 'paused' or a[1] == 'stopped' then
  redis.call('HSET', KEYS[1], 'state', 'parked', 'owner', '')
  redis.call('ZREM', KEYS[2], ref)
  redis.call('ZREM', KEYS[3], ref)
  redis.call('SADD', KEYS[6], ref)
  return {'parked'}
end
local until_ms = tonumber(a[2] or '0')
if until_ms > now then
  redis.call('HSET', KEYS[1], 'owner', '')
  redis.call('ZREM', KEYS[2], ref)
  redis.call('ZADD', KEYS[3], until_ms, ref)
  return {'deferred', a[2]}
end
redis.call('HSET', KEYS[1], 'owner', token, 'state', 'queued')
redis.call('ZREM', KEYS[3], ref)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ref)
if cstate == 'queued' then
  redis.call('HSET', KEYS[4], 'state', 'running', 'started_ms', ARGV[2])
end
return {'ok', b[3] or '', settle, b[5] or '0'}
