-- intake.lua — in-campaign dedup during intake: which of these recipients are new.
-- KEYS[1]  the campaign's seen SET (dedup keys: digits only)
-- ARGV[1]  the dedup keys of a chunk of recipients, joined by ','
-- Returns a string with one character per recipient, in order: '1' = new (now remembered),
-- '0' = a duplicate of an earlier line. (One string each way, not thousands of arguments and
-- integers: that halves the producer's work per recipient.)
local out, n = {}, 0
for key in string.gmatch(ARGV[1], '[^,]+') do
  n = n + 1
  out[n] = redis.call('SADD', KEYS[1], key) == 1 and '1' or '0'
end
return table.concat(out)
