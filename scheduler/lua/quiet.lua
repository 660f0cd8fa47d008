-- quiet.lua — keeps a login quiet until a time: no new slot is granted, because requests sent before a
-- Redis restart may still be in flight while the semaphore's memory of them is gone.
-- KEYS[1]  login HASH (account state)
-- ARGV[1]  until_ms (server clock); a later quiet never shortens an earlier one
-- Returns the quiet_until (ms) in effect.
local old = tonumber(redis.call('HGET', KEYS[1], 'quiet_until') or '0')
local new = tonumber(ARGV[1])
if new > old then
  redis.call('HSET', KEYS[1], 'quiet_until', int_s(new))
  return new
end
return old
