-- pause.lua — pauses a queued or running campaign (idempotent). Batches already due are parked by
-- begin when they come up; nothing in flight is interrupted.
-- KEYS[1]  campaign HASH
-- ARGV[1]  now_ms: '' = the server's clock (a value only for tests that step time)
-- ARGV[2]  reason (one line)
-- Returns the campaign's state after the call ('' when it does not exist).
local now_s = int_s(clock_ms(ARGV[1]))
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
if state == 'queued' or state == 'running' then
  redis.call('HSET', KEYS[1], 'state', 'paused', 'paused_from', state, 'pause_reason', ARGV[2],
             'paused_ms', now_s)
  return 'paused'
end
if state == 'paused' and ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'pause_reason', ARGV[2]) end
return state
