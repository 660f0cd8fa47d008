-- rate.lua — sliding-window request limits (status.php per message and per mass request, cost
-- requests, balance.php): the request is counted in every log, or, when any log is full, in none.
-- KEYS[i]  a log ZSET: one member a request, score = its time (ms, server clock); it expires one window
--          after its newest request
-- ARGV[1]  now_ms ('' = the Redis server's clock)
-- ARGV[2]  window_ms
-- ARGV[2+i] limit of KEYS[i]: requests allowed within any window_ms
-- Returns 0 when the request was counted (it may leave now); else the ms until it may (nothing counted).
-- A sliding window, not a fixed one opened by the first request: a fixed window would let twice the
-- limit through around its boundary, which a provider counting any minute refuses.
local now, window = clock_ms(ARGV[1]), tonumber(ARGV[2])
local wait = 0
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local limit, n = tonumber(ARGV[2 + i]), redis.call('ZCARD', key)
  if n >= limit then
    local oldest = redis.call('ZRANGE', key, n - limit, n - limit, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + window - now)
  end
end
if wait > 0 then return wait end
local now_s = int_s(now)
for _, key in ipairs(KEYS) do
  local seq = redis.call('ZCARD', key)
  while redis.call('ZADD', key, 'NX', now_s, now_s .. ':' .. seq) == 0 do seq = seq + 1 end
  redis.call('PEXPIRE', key, window)
end
return 0
