-- _lib.lua: helpers prepended to every script of this folder (not a script of its own).

-- The time (ms) by which a script decides: the Redis server's clock (design invariant 9: one clock for
-- every rule and lease, whatever host the caller runs on). A test may step time with an explicit value;
-- '' (what the Python side sends by default) means the server's clock.
local function clock_ms(override)
  if override and override ~= '' then return tonumber(override) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A whole number as Redis should store it (never '1.7e+12').
local function int_s(n)
  return string.format('%d', n)
end

-- Number of phones in a comma-joined list ("" → 0).
local function count_phones(s)
  if not s or s == '' then return 0 end
  local _, commas = string.gsub(s, ',', '')
  return commas + 1
end

-- Ends the campaign when every recipient has a final state. Returns the campaign's state.
-- A campaign that sent nothing but failed some ends 'failed'; a cancelled one stays 'cancelled'.
-- now_s: the time as a string (ms).
local function finish(ckey, now_s)
  local c = redis.call('HMGET', ckey, 'total', 'sent', 'failed', 'cancelled', 'state')
  local state = c[5]
  if state == 'planning' or state == 'completed' or state == 'failed' then return state end
  local total = tonumber(c[1] or '0')
  local sent, failed, cancelled = tonumber(c[2] or '0'), tonumber(c[3] or '0'), tonumber(c[4] or '0')
  if sent + failed + cancelled < total then return state end
  if redis.call('HEXISTS', ckey, 'finished_ms') == 0 then
    redis.call('HSET', ckey, 'finished_ms', now_s)
  end
  if state == 'cancelled' then return state end
  local final = 'completed'
  if sent == 0 and failed > 0 and cancelled == 0 then final = 'failed' end
  redis.call('HSET', ckey, 'state', final)
  return final
end

-- Report rows ("phone;state;id;parts;cost;code;reason\n") for every phone of a comma-joined list;
-- reason (optional) is written into the last column, made safe for the row format.
local function rows_for(phones, state, reason)
  if not phones or phones == '' then return '' end
  local tail = ';;;;'
  if reason and reason ~= '' then
    tail = tail .. string.gsub(string.gsub(reason, ';', ','), '\n', ' ')
  end
  local out, n = {}, 0
  for p in string.gmatch(phones, '[^,]+') do
    n = n + 1
    out[n] = p .. ';' .. state .. ';' .. tail .. '\n'
  end
  return table.concat(out)
end

-- The SET of batches whose report rows grew since the delivery side last tracked them ('{smsc}:<ns>:dl:grown',
-- Keys.delivery_grown), named from the batch key's prefix ('{smsc}:<ns>:b:<cid>:<n>'; the same hash tag) —
-- like the lane keys below, the one other exception to "keys only through KEYS": every script that appends
-- rows marks the batch here, and the delivery tick tracks only these (delivery/_lib.lua's d_track takes a
-- batch out of it atomically with reading its rows), instead of reading every batch of every campaign.
local function grown_key(bkey)
  local prefix, ref = string.match(bkey, '^(.*:)b:([^:]+:%d+)$')
  if prefix then return prefix .. 'dl:grown', ref end
  return nil, nil
end

local function append_rows(bkey, rows)
  if rows ~= '' then
    redis.call('HSET', bkey, 'rows', (redis.call('HGET', bkey, 'rows') or '') .. rows)
    local gkey, ref = grown_key(bkey)
    if gkey then redis.call('SADD', gkey, ref) end
  end
end

-- Priority lanes (claim.lua's header has the mechanism; scheduler/keys.py the keys). Every script that
-- writes the due ZSET indexes the batch beside it with lane_add, and every one that takes a batch off
-- the due ZSET drops it with lane_remove; an index entry the due ZSET no longer backs is stale and the
-- claim drops it when it meets it, so a path that skips these helpers costs priority, never a batch.
--
-- The lane keys are the one exception to "keys only through KEYS": the claim only learns inside the
-- script which campaigns are in a lane, so the per-campaign keys are named here, from the prefix of the
-- due ZSET the caller passes ('{smsc}:<ns>:due' -> '{smsc}:<ns>:'). They carry the same hash tag, so
-- they live in the caller's slot on Redis Cluster; Keys.lane* in scheduler/keys.py build the same names.
local LANES = {urgent = true, normal = true, bulk = true}

-- The namespace prefix of a due ZSET's name.
local function ns_prefix(due_key)
  if string.sub(due_key, -4) ~= ':due' then error('not a due ZSET: ' .. tostring(due_key)) end
  return string.sub(due_key, 1, -4)
end

-- The campaign id of a batch ref 'cid:n'.
local function ref_cid(ref)
  return string.match(ref, '^(.*):[^:]*$') or ref
end

-- A campaign's lane: its HASH's `priority` (urgent | normal | bulk; anything else, or none, is normal).
local function lane_of(prefix, cid)
  local p = redis.call('HGET', prefix .. 'c:' .. cid, 'priority')
  if p and LANES[p] then return p end
  return 'normal'
end

-- A campaign that has a batch in its lane index due at due_ms joins its lane: it waits in the lane's
-- wait ZSET until its earliest indexed due time (the earlier time wins), unless it is in the rotation.
local function lane_join(prefix, lane, cid, due_ms)
  if redis.call('ZSCORE', prefix .. 'lanes:' .. lane, cid) then return end
  local wkey = prefix .. 'lanes:' .. lane .. ':wait'
  local w = redis.call('ZSCORE', wkey, cid)
  if not w or tonumber(w) > tonumber(due_ms) then redis.call('ZADD', wkey, due_ms, cid) end
end

-- Index a batch that is (again) in the due ZSET at due_ms; lane: its campaign's, or nil to look it up.
local function lane_add(due_key, ref, due_ms, lane)
  local prefix = ns_prefix(due_key)
  local cid = ref_cid(ref)
  lane = lane or lane_of(prefix, cid)
  redis.call('ZADD', prefix .. 'lane:' .. lane .. ':' .. cid, due_ms, ref)
  lane_join(prefix, lane, cid, due_ms)
end

-- Drop a batch that left the due ZSET from its lane index.
local function lane_remove(due_key, ref, lane)
  local prefix = ns_prefix(due_key)
  local cid = ref_cid(ref)
  redis.call('ZREM', prefix .. 'lane:' .. (lane or lane_of(prefix, cid)) .. ':' .. cid, ref)
end

-- A campaign whose lane index is empty leaves its lane (rotation and wait ZSETs).
local function lane_leave_if_empty(due_key, cid, lane)
  local prefix = ns_prefix(due_key)
  lane = lane or lane_of(prefix, cid)
  if redis.call('EXISTS', prefix .. 'lane:' .. lane .. ':' .. cid) == 0 then
    redis.call('ZREM', prefix .. 'lanes:' .. lane, cid)
    redis.call('ZREM', prefix .. 'lanes:' .. lane .. ':wait', cid)
  end
end

-- hold.lua's body (its header says what it answers): may the held slot `token` carry a new request now?
-- Renews its leases when `lease_ms` is given ('' = only check). k = {inflight, probe, status, revoked,
-- login HASH}.
local function slot_hold(k, token, now, lease_ms)
  local lease = tonumber(redis.call('ZSCORE', k[1], token) or '0')
  if lease <= now then return -1 end
  if lease_ms ~= '' then
    local lease_until = int_s(now + tonumber(lease_ms))
    for i = 1, 4 do redis.call('ZADD', k[i], 'XX', 'GT', lease_until, token) end
  end
  redis.call('ZREMRANGEBYSCORE', k[4], '-inf', now)
  if redis.call('ZSCORE', k[4], token) then return 0 end
  local a = redis.call('HMGET', k[5], 'state', 'backoff_until', 'quiet_until')
  if a[1] == 'stopped' or tonumber(a[2] or '0') > now or tonumber(a[3] or '0') > now then return 0 end
  return 1
end

-- mark_sending.lua's body (its header says what it answers): the send intent, fenced by the owner token.
local function batch_mark_sending(bkey, leased, ref, token, now, settle_margin_ms, lease_ms)
  if redis.call('HGET', bkey, 'owner') ~= token then return {0, now, 0} end
  if not redis.call('ZSCORE', leased, ref) then return {0, now, 0} end
  local settle_after = now + tonumber(settle_margin_ms)
  redis.call('HSET', bkey, 'state', 'sending', 'sent_at', int_s(now), 'settle_after', int_s(settle_after))
  redis.call('HINCRBY', bkey, 'attempts', 1)
  redis.call('ZADD', leased, now + tonumber(lease_ms), ref)
  return {1, now, settle_after}
end

-- acquire.lua's body (its header says what it answers): take one of the login's slots for `token`.
-- k = {inflight, login HASH, probe, revoked}.
local function slot_acquire(k, token, now, lease_ms, cap, probe)
  redis.call('ZREMRANGEBYSCORE', k[1], '-inf', now)
  redis.call('ZREMRANGEBYSCORE', k[4], '-inf', now)
  local a = redis.call('HMGET', k[2], 'state', 'backoff_until', 'quiet_until', 'verified', 'adaptive_cap')
  if a[1] == 'stopped' or tonumber(a[2] or '0') > now or tonumber(a[3] or '0') > now then return -1 end
  local adaptive = tonumber(a[5] or '')
  if adaptive then cap = math.min(cap, math.max(1, math.floor(adaptive))) end
  if a[4] ~= '1' then cap = 1 end
  if redis.call('ZCARD', k[1]) >= cap then return 0 end
  local lease_until = int_s(now + tonumber(lease_ms))
  if probe == '1' then
    redis.call('ZREMRANGEBYSCORE', k[3], '-inf', now)
    if redis.call('ZCARD', k[3]) >= 1 then return 0 end
    redis.call('ZADD', k[3], lease_until, token)
  end
  redis.call('ZADD', k[1], lease_until, token)
  return 1
end

-- flood.lua's body for one phone (its header says what it answers): 0 = admitted (counted), else the
-- server time (ms) from which it may be sent.
local function flood_admit(key, now, limit, gap)
  -- The first message to a number in a minute (a campaign's usual case): one call.
  if redis.call('SET', key, '1:' .. int_s(now), 'NX', 'PX', int_s(gap)) then return 0 end
  local v = redis.call('GET', key)
  local count, last = 0, 0
  if v then
    local c, l = string.match(v, '^(%d+):(%d+)$')
    count, last = tonumber(c), tonumber(l)
  end
  if v and now - last < gap then
    if count >= limit then return last + gap end
    -- The chain's last message never moves back (a test's stepped clock, a server clock set back).
    local newest = math.max(last, now)
    redis.call('SET', key, tostring(count + 1) .. ':' .. int_s(newest), 'PX', int_s(newest + gap - now))
    return 0
  end
  redis.call('SET', key, '1:' .. int_s(now), 'PX', int_s(gap))
  return 0
end
