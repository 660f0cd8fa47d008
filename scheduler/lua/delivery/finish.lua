-- delivery/finish.lua — the campaign's delivery state: 'completed' noted once the ledger has ended the
-- campaign, 'delivered_final' once every sent recipient is tracked and none is pending (each has a
-- final state, or is unknown after its horizon); each transition queues one campaign event for the
-- webhook (when the campaign has one, or a default exists), with the counters as they are then.
-- KEYS[1]  campaign HASH (the ledger's: state, sent)
-- KEYS[2]  the campaign's delivery HASH
-- KEYS[3]  webhook events HASH (id -> event)
-- KEYS[4]  webhook due ZSET (id -> next attempt, ms)
-- KEYS[5]  webhook tries HASH (id -> "attempts,first_ms")
-- ARGV[1]  now_ms ('' = the Redis server's clock)
-- ARGV[2]  '1' when a default webhook URL exists
-- ARGV[3]  campaign id
-- Returns {delivery state ('' / 'delivering' / 'delivered_final'), pending rows, tracked rows, sent}.
local now = clock_ms(ARGV[1])
local cid = ARGV[3]
local c = redis.call('HMGET', KEYS[1], 'state', 'sent')
local cstate, sent = c[1] or '', tonumber(c[2] or '0') or 0
local d = redis.call('HMGET', KEYS[2], 'state', 'tracked', 'c1', 'c9', 'c10', 'completed_ms', 'webhook')
local dstate, tracked = d[1] or '', tonumber(d[2] or '0') or 0
local pending = (tonumber(d[3] or '0') or 0) + (tonumber(d[4] or '0') or 0) + (tonumber(d[5] or '0') or 0)
local hooked = ARGV[2] == '1' or (d[7] or '') ~= ''
local ended = cstate == 'completed' or cstate == 'failed' or cstate == 'cancelled'

local function event(kind)
  if not hooked then return end
  local counters = redis.call('HGETALL', KEYS[2])
  local parts = {}
  for j = 1, #counters, 2 do
    local f = counters[j]
    if string.match(f, '^c%d+$') or f == 'tracked' then parts[#parts + 1] = f .. '=' .. counters[j + 1] end
  end
  local id = 'c:' .. cid .. ':' .. kind
  if redis.call('HEXISTS', KEYS[3], id) == 1 then return end
  redis.call('HSET', KEYS[3], id, 'c|' .. int_s(now) .. '|' .. cid .. '|' .. kind .. '|' .. cstate .. '|' ..
             sent .. '|' .. table.concat(parts, '&'))
  redis.call('HSET', KEYS[5], id, '0,' .. int_s(now))
  redis.call('ZADD', KEYS[4], int_s(now), id)
end

if ended and not d[6] then
  redis.call('HSET', KEYS[2], 'completed_ms', int_s(now))
  event('completed')
end
if dstate ~= 'delivered_final' then
  if ended and tracked >= sent and pending == 0 then
    redis.call('HSET', KEYS[2], 'state', 'delivered_final', 'final_ms', int_s(now))
    dstate = 'delivered_final'
    event('delivered_final')
  elseif dstate == '' and sent > 0 then
    redis.call('HSET', KEYS[2], 'state', 'delivering')
    dstate = 'delivering'
  end
end
return {dstate, pending, tracked, sent}
