-- create.lua — a campaign id from its claim to its commit: one intake at a time, every write fenced.
--
-- An intake claims the campaign id before it writes anything: the campaign HASH is created in state
-- 'planning' with the intake's random token (`owner`) and a lease (`lease_until`, ms of the server's
-- clock) that the intake renews while it streams. A second intake of the same id waits while the
-- lease runs ('busy'), takes the id over once the lease ran out (its owner died: 'taken_over'), or
-- finds the campaign committed ('exists'). Every write of an intake (this script's 'stage', 'drop',
-- 'abandon', 'commit', and intake.lua) checks the token first, so an intake that stalled past its
-- lease and wakes up after another took over writes nothing.
--
-- ARGV[1]  op: 'claim' | 'renew' | 'stage' | 'due' | 'drop' | 'abandon' | 'commit'
-- ARGV[2]  the intake's owner token
-- ARGV[3]  lease in ms (the claim is renewed until now + lease by claim, renew and stage)
-- ARGV[4]  now_ms for tests that step time ('' = the server's TIME)
--
-- claim    KEYS[1] campaign HASH. ARGV[5] the content (JSON of digests: what "the same campaign"
--          means), ARGV[6..] field, value pairs of the new campaign HASH.
--          Returns {'claimed', 0} | {'taken_over', batches the dead intake may have written}
--                | {'busy', lease_until_ms, now_ms} | {'exists', state, content, recipients digest}
-- renew    KEYS[1]. Returns 1, or 0 when the claim is no longer this intake's.
-- stage    KEYS[1], KEYS[1+i] batch HASH i. ARGV[5] batches written so far (a high-water mark kept
--          in the HASH's `batches`, so that whoever takes over knows what to drop), then per batch
--          five ARGVs: its phones (joined by ','), its due time in ms ('' = none), the JSON of its
--          recipients' own texts, of their own senders and of their own UTC offsets (personal
--          campaigns; '' = none: the field is not written). A batch's field `n` is the number of its phones, for the commit's check.
--          Returns 1 | 0.
-- due      KEYS[1], KEYS[1+i] batch HASH i, ARGV[4+i] its due time in ms. Returns 1 | 0.
-- drop     KEYS[1], KEYS[1+i] keys of this campaign to unlink (a dead intake's batches, its seen SET).
--          ARGV[5] the new value of `batches` ('' = keep). Returns 1 | 0.
-- abandon  KEYS[1]: the intake failed and dropped what it wrote; the HASH is deleted. Returns 1 | 0.
-- commit   KEYS[1], KEYS[2] due ZSET, KEYS[3] the account's campaigns SET, KEYS[4] campaigns ZSET,
--          KEYS[5] the seen SET, KEYS[6] meta HASH, KEYS[6+i] the HASH of batch i. ARGV[5] the Redis
--          server's run_id (HSETNX into meta: see scheduler.recovery), ARGV[6] the recipients counted
--          by the intake, ARGV[7] k, ARGV[8..7+2k] field, value pairs for the campaign HASH, then
--          per batch i its ref and due time (ms). The campaign becomes 'queued' and every batch due,
--          all at once or not at all — and only if what the intake wrote is all there: as many
--          recipients in the seen SET and in the batches (their `n`) as it counted (a Redis restart during the
--          intake can lose its last second of writes while the intake goes on). Returns 1 | 0 |
--          -1 (writes of the intake are missing: nothing was committed). Beside the due ZSET every
--          batch goes into its campaign's lane index, the lane its HASH's `priority` names (written
--          at the claim from CampaignSpec.extra; see lane_add in _lib.lua and claim.lua).
local op, token, lease = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = clock_ms(ARGV[4])
local now_s, until_s = int_s(now), int_s(now + lease)
local ckey = KEYS[1]

local function owns()
  local c = redis.call('HMGET', ckey, 'state', 'owner')
  return c[1] == 'planning' and c[2] == token
end

if op == 'claim' then
  local c = redis.call('HMGET', ckey, 'state', 'owner', 'lease_until', 'batches', 'content', 'recipients')
  local state = c[1]
  if state and state ~= 'planning' then
    return {'exists', state, c[5] or '', c[6] or ''}
  end
  if state == 'planning' and c[2] ~= token and tonumber(c[3] or '0') >= now then
    return {'busy', tonumber(c[3]), now}
  end
  local fields = {}
  for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
  if #fields > 0 then redis.call('HSET', ckey, unpack(fields)) end
  redis.call('HSET', ckey, 'state', 'planning', 'owner', token, 'lease_until', until_s,
             'content', ARGV[5], 'created_ms', now_s)
  if state == 'planning' then
    return {'taken_over', tonumber(c[4] or '0')}
  end
  redis.call('HSET', ckey, 'batches', 0)
  return {'claimed', 0}
end

if not owns() then return 0 end

if op == 'renew' then
  redis.call('HSET', ckey, 'lease_until', until_s)
  return 1
end

if op == 'stage' then
  for i = 2, #KEYS do
    local at = 1 + 5 * (i - 1)
    local bkey, phones, due, texts, senders = KEYS[i], ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
    local zones = ARGV[at + 4]
    local n = count_phones(phones)
    redis.call('HSET', bkey, 'phones', phones, 'state', 'queued', 'attempts', 0, 'owner', '', 'n', n)
    if due ~= '' then redis.call('HSET', bkey, 'due', due) end
    if texts ~= '' then redis.call('HSET', bkey, 'texts', texts) end
    if senders ~= '' then redis.call('HSET', bkey, 'senders', senders) end
    if zones ~= '' then redis.call('HSET', bkey, 'zones', zones) end
  end
  local mark = tonumber(ARGV[5])
  if mark > tonumber(redis.call('HGET', ckey, 'batches') or '0') then redis.call('HSET', ckey, 'batches', mark) end
  redis.call('HSET', ckey, 'lease_until', until_s)
  return 1
end

if op == 'due' then
  for i = 2, #KEYS do redis.call('HSET', KEYS[i], 'due', ARGV[3 + i]) end
  return 1
end

if op == 'drop' then
  for i = 2, #KEYS do redis.call('UNLINK', KEYS[i]) end
  if ARGV[5] ~= '' then redis.call('HSET', ckey, 'batches', ARGV[5]) end
  return 1
end

if op == 'abandon' then
  redis.call('DEL', ckey)
  return 1
end

if op == 'commit' then
  local total = tonumber(ARGV[6])
  if redis.call('SCARD', KEYS[5]) ~= total then return -1 end
  local n = 0
  for i = 7, #KEYS do
    local staged = redis.call('HGET', KEYS[i], 'n')  -- the recipients its last write held
    if not staged then return -1 end
    n = n + tonumber(staged)
  end
  if n ~= total then return -1 end
  local cid = redis.call('HGET', ckey, 'id')
  local k = tonumber(ARGV[7])
  local fields = {}
  for i = 8, 7 + 2 * k do fields[#fields + 1] = ARGV[i] end
  local first = 8 + 2 * k
  -- Every batch into the due ZSET and, beside it, into the campaign's lane index (see claim.lua).
  local prefix = ns_prefix(KEYS[2])
  local lane = lane_of(prefix, cid)
  local lkey = prefix .. 'lane:' .. lane .. ':' .. cid
  local earliest = nil
  local chunk = {}
  for i = first, #ARGV, 2 do
    chunk[#chunk + 1] = ARGV[i + 1]
    chunk[#chunk + 1] = ARGV[i]
    local at = tonumber(ARGV[i + 1])
    if not earliest or at < earliest then earliest = at end
    if #chunk >= 1000 then
      redis.call('ZADD', KEYS[2], unpack(chunk))
      redis.call('ZADD', lkey, unpack(chunk))
      chunk = {}
    end
  end
  if #chunk > 0 then
    redis.call('ZADD', KEYS[2], unpack(chunk))
    redis.call('ZADD', lkey, unpack(chunk))
  end
  if earliest then lane_join(prefix, lane, cid, earliest) end
  if #fields > 0 then redis.call('HSET', ckey, unpack(fields)) end
  redis.call('HSET', ckey, 'state', 'queued', 'queued_ms', now_s)
  redis.call('HDEL', ckey, 'owner', 'lease_until')
  redis.call('SADD', KEYS[3], cid)
  redis.call('ZADD', KEYS[4], now_s, cid)
  redis.call('UNLINK', KEYS[5])  -- a large SET is freed in the background, not in this script
  redis.call('HSETNX', KEYS[6], 'run_id', ARGV[5])
  return 1
end

return redis.error_reply('create.lua: unknown op ' .. tostring(op))
