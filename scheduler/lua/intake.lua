-- intake.lua — in-campaign dedup during intake: which of these recipients are new.
-- KEYS[1]  the campaign's seen SET (dedup keys: digits only)
-- ARGV[i]  dedup key of recipient i
-- Returns, per recipient: 1 = new (now remembered), 0 = a duplicate of an earlier line.
local out = {}
for i, key in ipairs(ARGV) do out[i] = redis.call('SADD', KEYS[1], key) end
return out
