-- delivery/expire.lua — the horizon of a batch has passed: every sent row without a final status becomes
-- unknown (queued for the webhook as such), and the batch leaves the polling schedule.
-- KEYS[1]  webhook-new HASH
-- KEYS[2]  delivery due ZSET
-- KEYS[3]  batch HASH
-- KEYS[4]  delivery record STRING
-- KEYS[5]  the campaign's delivery HASH
-- ARGV[1]  now_ms ('' = the Redis server's clock)
-- ARGV[2]  '1' when a default webhook URL exists
-- ARGV[3]  ref
-- ARGV[4]  batch number n
-- Returns the number of rows that became unknown.
local now = clock_ms(ARGV[1])
local ref = ARGV[3]
d_track(KEYS[3], KEYS[4], KEYS[5], ARGV[4], now)
local rows = redis.call('HGET', KEYS[3], 'rows') or ''
local now_s = math.floor(now / 1000)
local i, n = 0, 0
for line in string.gmatch(rows, '([^\n]*)\n') do
  local code, err, ts, flags = d_get(KEYS[4], i)
  if d_pending(code) then
    local phone = string.match(line, '^([^;]*);')
    if d_notify(KEYS[1], KEYS[5], ref, ARGV[2], phone, 2, 0, now_s) then flags = 1 end
    d_set(KEYS[4], i, 2, err, ts, flags)
    d_count(KEYS[5], code, 2)
    n = n + 1
  end
  i = i + 1
end
redis.call('ZREM', KEYS[2], ref)
redis.call('HSET', KEYS[5], 'e' .. ARGV[4], int_s(now))
return n
