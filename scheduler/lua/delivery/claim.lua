-- delivery/claim.lua — take due members of a schedule ZSET (batches to poll, webhook events to post):
-- each taken one is re-scored to now + lease, so no other process takes it before it is done or its
-- taker died.
-- KEYS[1]  the schedule ZSET (member -> due, ms)
-- ARGV[1]  now_ms ('' = the Redis server's clock)
-- ARGV[2]  lease_ms
-- ARGV[3]  the most members to take
-- Returns the members taken, earliest due first.
local now = clock_ms(ARGV[1])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local until_s = int_s(now + tonumber(ARGV[2]))
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], until_s, m) end
return due
