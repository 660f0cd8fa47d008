-- intake.lua — in-campaign dedup during intake: which of these recipients are new (and, with the stop
-- list, which are stopped).
-- KEYS[1]  the seen SET (dedup keys: digits only)
-- KEYS[2]  (optional) the campaign HASH whose intake this is: the call is fenced by the intake's claim
--          (create.lua), so an intake that lost its claim cannot mark a recipient as seen
-- KEYS[3]  (optional, with KEYS[2]) the stop-list HASH (scheduler/stoplist.py: field = stop key)
-- ARGV[1]  the dedup keys of a chunk of recipients, joined by ','
-- ARGV[2]  (optional) TTL of the seen SET in ms ('' = none): the set of an intake that died expires;
--          a commit deletes it
-- ARGV[3]  (with KEYS[2]) the intake's owner token
-- ARGV[4]  (with KEYS[2]) lease in ms: the claim is renewed until now + lease
-- ARGV[5]  (with KEYS[2]) now_ms for tests that step time ('' = the server's TIME)
-- ARGV[6]  (with KEYS[3]) the same recipients' stop keys, joined by ',', each one '' where it is the
--          recipient's dedup key (StopList.intake_keys)
-- Returns a string with one character per recipient, in order: '1' = new (now remembered),
-- '0' = a duplicate of an earlier line, 's' = on the stop list (not remembered: a later line of it is
-- stopped too) (one string each way, not thousands of arguments and integers: that halves the
-- producer's work per recipient); or the integer 0 when KEYS[2] is given and the claim is no longer
-- this intake's (nothing was written).
if KEYS[2] then
  local c = redis.call('HMGET', KEYS[2], 'state', 'owner')
  if c[1] ~= 'planning' or c[2] ~= ARGV[3] then return 0 end
  redis.call('HSET', KEYS[2], 'lease_until', int_s(clock_ms(ARGV[5]) + tonumber(ARGV[4])))
end
local keys, n = {}, 0
for key in string.gmatch(ARGV[1], '[^,]+') do n = n + 1; keys[n] = key end
local out = {}
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then
  local stop, i = {}, 0
  for s in string.gmatch(ARGV[6] .. ',', '([^,]*),') do i = i + 1; stop[i] = s end
  for j = 1, n do
    local s = stop[j]
    if s == nil or s == '' then s = keys[j] end
    if redis.call('HEXISTS', KEYS[3], s) == 1 then out[j] = 's' end
  end
end
-- The dedup, 500 keys a call (one call a key cost a third more of the server's time): which were seen
-- before (SMISMEMBER), then one SADD of the new ones; a key twice in the chunk is new the first time.
local fresh = {}
for lo = 1, n, 500 do
  local hi = math.min(lo + 499, n)
  local seen = redis.call('SMISMEMBER', KEYS[1], unpack(keys, lo, hi))
  local add, a = {}, 0
  for j = lo, hi do
    if out[j] == nil then
      local key = keys[j]
      if seen[j - lo + 1] == 1 or fresh[key] then
        out[j] = '0'
      else
        out[j] = '1'
        fresh[key] = true
        a = a + 1
        add[a] = key
      end
    end
  end
  if a > 0 then redis.call('SADD', KEYS[1], unpack(add)) end
end
local ttl = tonumber(ARGV[2] or '')
if ttl and n > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return table.concat(out)
