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

local function append_rows(bkey, rows)
  if rows ~= '' then redis.call('HSET', bkey, 'rows', (redis.call('HGET', bkey, 'rows') or '') .. rows) end
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
