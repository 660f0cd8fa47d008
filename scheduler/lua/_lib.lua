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
