-- delivery/_lib.lua: helpers of the delivery scripts (prepended after ../_lib.lua; not a script of its own).
--
-- A batch's delivery record is one STRING (KEYS: the record) of 8 bytes per row of the batch's report
-- rows, in their order (rows are only ever appended, so a row's index never changes), read and written
-- with BITFIELD at bit offset index * 64:
--   u8  at +0   code: 0 not a sent row (or not tracked yet), 1 sent and no status yet, 2 unknown (the
--               horizon passed without a final status), else the provider's status + 10 (-2..25 -> 8..35)
--   u8  at +8   the provider's delivery error code (err, 0..255)
--   u32 at +16  the time of the last change, Unix seconds (the provider's; for code 1 the send's)
--   u8  at +56  flags: 1 = a webhook event holds a final state of this row
-- The campaign's delivery HASH counts rows by code (field 'c<code>'), keeps 'tracked' (sent rows
-- known to the record) and per batch 'b<n>' = "<rows bytes seen>,<rows seen>,<first tracked ms>".

local function d_final(code) return code >= 8 and code ~= 9 and code ~= 10 end
local function d_pending(code) return code == 1 or code == 9 or code == 10 end

local function d_get(rkey, i)
  local off = i * 64
  local v = redis.call('BITFIELD', rkey, 'GET', 'u8', off, 'GET', 'u8', off + 8, 'GET', 'u32', off + 16,
                       'GET', 'u8', off + 56)
  return v[1], v[2], v[3], v[4]
end

local function d_set(rkey, i, code, err, ts, flags)
  local off = i * 64
  redis.call('BITFIELD', rkey, 'SET', 'u8', off, code, 'SET', 'u8', off + 8, err, 'SET', 'u32', off + 16, ts,
             'SET', 'u8', off + 56, flags)
end

local function d_count(dkey, from, to)
  if from == to then return end
  if from ~= 0 then redis.call('HINCRBY', dkey, 'c' .. from, -1) end
  if to ~= 0 then redis.call('HINCRBY', dkey, 'c' .. to, 1) end
end

-- The batch's rows not tracked yet become sent rows of the record (code 1, the send's time). Returns the
-- new sent rows and the time the batch's age counts from (ms): its send when first tracked.
local function d_track(bkey, rkey, dkey, n, now)
  local field = 'b' .. n
  local meta = redis.call('HGET', dkey, field)
  local bytes, count, first = 0, 0, 0
  if meta then
    local a, b, c = string.match(meta, '^(%d+),(%d+),(%d+)$')
    bytes, count, first = tonumber(a), tonumber(b), tonumber(c)
  end
  local rows = redis.call('HGET', bkey, 'rows') or ''
  local gkey, ref = grown_key(bkey)
  if gkey then redis.call('SREM', gkey, ref) end -- its rows are read now: a later growth marks it again
  if #rows <= bytes then return 0, first end
  local sent_at = tonumber(redis.call('HGET', bkey, 'sent_at') or '0') or 0
  if sent_at <= 0 then sent_at = now end
  local sent_s = math.floor(sent_at / 1000)
  local new = 0
  -- The new rows' records in one SETRANGE (the layout above: code 1, err 0, the send's time, flags 0;
  -- a row that is not a sent one stays 8 zero bytes), not one BITFIELD a row: 500 calls a batch less.
  local sent_rec = string.char(1, 0, math.floor(sent_s / 16777216) % 256, math.floor(sent_s / 65536) % 256,
                               math.floor(sent_s / 256) % 256, sent_s % 256, 0, 0)
  local zero_rec = string.rep('\0', 8)
  local recs, last, start = {}, 0, count
  for line in string.gmatch(string.sub(rows, bytes + 1), '([^\n]*)\n') do
    if string.match(line, '^[^;]*;([^;]*);') == 'sent' then
      recs[#recs + 1] = sent_rec
      last = #recs
      new = new + 1
    else
      recs[#recs + 1] = zero_rec
    end
    count = count + 1
  end
  if last > 0 then redis.call('SETRANGE', rkey, start * 8, table.concat(recs, '', 1, last)) end
  -- A batch's age (its poll steps, its horizon) counts from its send: a campaign sent before delivery
  -- was tracked is not polled for a day from now, but once, at once, past its horizon.
  if first == 0 then first = sent_at end
  redis.call('HSET', dkey, field, #rows .. ',' .. count .. ',' .. int_s(first))
  if new > 0 then
    redis.call('HINCRBY', dkey, 'c1', new)
    redis.call('HINCRBY', dkey, 'tracked', new)
  end
  return new, first
end

-- Queue a row's final state for the campaign's webhook ("phone,code,err,ts;" appended to the batch's
-- field of the webhook-new HASH), when the campaign has a webhook or a default one exists.
local function d_notify(newkey, dkey, ref, default, phone, code, err, ts)
  if default ~= '1' and (redis.call('HGET', dkey, 'webhook') or '') == '' then return false end
  local items = redis.call('HGET', newkey, ref) or ''
  redis.call('HSET', newkey, ref, items .. phone .. ',' .. code .. ',' .. err .. ',' .. ts .. ';')
  return true
end
