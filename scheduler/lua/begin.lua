-- begin.lua — a task execution takes a batch (fenced by a fresh token), or learns why it must not.
-- KEYS[1]  batch HASH
-- KEYS[2]  leased ZSET
-- KEYS[3]  due ZSET
-- KEYS[4]  campaign HASH
-- KEYS[5]  login HASH (account state: stopped, backoff_until, quiet_until; see scheduler.guards)
-- KEYS[6]  campaign's parked SET
-- (the campaign's lane index: named from KEYS[3], see lane_add in _lib.lua)
-- ARGV[1]  now_ms: '' = the server's clock (a value only for tests that step time)
-- ARGV[2]  ref (cid:n)
-- ARGV[3]  token of this execution
-- ARGV[4]  exec_lease_ms: how long this execution may hold the batch
-- ARGV[5]  quarantine_after: executions that began but never recorded an outcome (a crash, an
--          unexpected error) after which the batch is quarantined instead of run again
-- Returns {verdict, now_ms, ...} — now_ms is the server's time of the decision — one of:
--   {'ok', now, phones, settle, attempts}   this execution owns the batch
--   {'missing', now} {'done', now} {'busy', now}   nothing to do (stale or duplicate message)
--   {'cancelled', now, n}                   the campaign was cancelled: n pending recipients cancelled
--   {'parked', now}                         campaign paused or account stopped: kept for resume
--   {'deferred', now, until_ms}             not before until_ms (account back-off or quiet, settle wait)
--   {'quarantine', now, n, reason, phones, settle, attempts}
--       the batch failed quarantine_after executions in a row: when settle is '0', its n pending
--       recipients were failed here with the reason (the batch is done); when settle is '1', its last
--       request may have reached the provider: this execution owns the batch to settle it first
--       (status.php), then ends it with record's quarantine reason. Should that execution not record
--       either, the next begin fails the recipients, saying that some may have been sent.
local now = clock_ms(ARGV[1])
local now_s = int_s(now)
local ref, token = ARGV[2], ARGV[3]

-- Off the leased and the due queue.
local function off_queues()
  redis.call('ZREM', KEYS[2], ref)
  if redis.call('ZREM', KEYS[3], ref) == 1 then lane_remove(KEYS[3], ref) end
end

-- Back to the due-queue until until_ms, owned by no one: {'deferred', now, until_ms}.
local function defer(until_ms)
  redis.call('HSET', KEYS[1], 'owner', '')
  redis.call('ZREM', KEYS[2], ref)
  redis.call('ZADD', KEYS[3], until_ms, ref)
  lane_add(KEYS[3], ref, until_ms)
  return {'deferred', now, int_s(until_ms)}
end

-- The batch ends here, without a request: report rows for its pending recipients, the batch done (and
-- the field, value pairs given), off both queues, the campaign finished if these were its last.
local function close(rows, ...)
  append_rows(KEYS[1], rows)
  redis.call('HSET', KEYS[1], 'state', 'done', 'phones', '', 'owner', '', ...)
  off_queues()
  finish(KEYS[4], now_s)
end

-- This execution owns the batch (one more execution without an outcome, until it records one).
local function take(unrecorded)
  redis.call('HSET', KEYS[1], 'owner', token, 'state', 'queued', 'unrecorded', unrecorded + 1)
  if redis.call('ZREM', KEYS[3], ref) == 1 then lane_remove(KEYS[3], ref) end
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ref)
end

local b = redis.call('HMGET', KEYS[1], 'state', 'owner', 'phones', 'settle', 'attempts', 'settle_after',
                     'unrecorded', 'last_error')
local state = b[1]
if not state then
  off_queues()
  return {'missing', now}
end
if state == 'done' then
  redis.call('ZREM', KEYS[2], ref)
  return {'done', now}
end
if state == 'parked' or state == 'planned' then return {'busy', now} end
-- A stale or repeated message for a batch that was put back for later: not before its due time.
local due_score = redis.call('ZSCORE', KEYS[3], ref)
if due_score and tonumber(due_score) > now then return {'deferred', now, int_s(tonumber(due_score))} end
local lease = tonumber(redis.call('ZSCORE', KEYS[2], ref) or '0')
if b[2] and b[2] ~= '' and lease > now then return {'busy', now} end
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
  if after > now then return defer(after) end
end
local cstate = redis.call('HGET', KEYS[4], 'state')
if cstate == 'cancelled' and settle ~= '1' then
  local n = count_phones(b[3])
  if n > 0 then redis.call('HINCRBY', KEYS[4], 'cancelled', n) end
  close(rows_for(b[3], 'cancelled'))
  return {'cancelled', now, n}
end
local a = redis.call('HMGET', KEYS[5], 'state', 'backoff_until', 'quiet_until')
if cstate == 'paused' or a[1] == 'stopped' then
  redis.call('HSET', KEYS[1], 'state', 'parked', 'owner', '')
  off_queues()
  redis.call('SADD', KEYS[6], ref)
  return {'parked', now}
end
-- Backing off, or quiet after a Redis restart (requests from before it may still be in flight): the
-- semaphore would refuse every slot until then anyway.
local until_ms = math.max(tonumber(a[2] or '0'), tonumber(a[3] or '0'))
if until_ms > now then return defer(until_ms) end
-- A poison batch (it crashes its execution every time) must not loop for ever: after quarantine_after
-- executions that never recorded anything, its recipients fail with the reason.
local unrecorded = tonumber(b[7] or '0')
local limit = tonumber(ARGV[5])
if unrecorded >= limit then
  local reason = 'quarantined after ' .. unrecorded .. ' attempts: ' ..
      ((b[8] and b[8] ~= '') and b[8] or 'no outcome was ever recorded (worker killed, or an unexpected error)')
  if settle == '1' and unrecorded == limit then
    -- Its last request may be with the provider: one execution more, to settle and then quarantine.
    take(unrecorded)
    return {'quarantine', now, 0, reason, b[3] or '', '1', b[5] or '0'}
  end
  if settle == '1' then
    reason = reason .. '; its last request may have reached the provider and could not be settled, so' ..
        ' some of these recipients may have been sent'
  end
  local n = count_phones(b[3])
  if n > 0 then
    redis.call('HINCRBY', KEYS[4], 'failed', n)
    redis.call('HINCRBY', KEYS[4], 'quarantined', n)
  end
  redis.call('HSET', KEYS[4], 'last_error', string.sub(reason, 1, 300))
  redis.call('HDEL', KEYS[1], 'settle')
  close(rows_for(b[3], 'failed', reason), 'quarantined', reason)
  return {'quarantine', now, n, reason, '', '0', b[5] or '0'}
end
take(unrecorded)
if cstate == 'queued' then
  redis.call('HSET', KEYS[4], 'state', 'running', 'started_ms', now_s)
end
return {'ok', now, b[3] or '', settle, b[5] or '0'}
