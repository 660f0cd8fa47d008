-- delivery/apply.lua — statuses (pushed or polled) applied to the batches' delivery records, counted
-- per campaign, a row's first final state queued for the webhook; also tracks new rows of each batch.
-- KEYS[1]  webhook-new HASH (ref -> queued "phone,code,err,ts;" items)
-- KEYS[2]  delivery due ZSET (ref -> next poll, ms)
-- KEYS[3g], KEYS[3g+1], KEYS[3g+2] for each group g = 1..G: batch HASH, delivery record STRING,
--          the campaign's delivery HASH
-- ARGV[1]  now_ms ('' = the Redis server's clock)
-- ARGV[2]  '1' when a default webhook URL exists (every campaign's final states are queued), else '0'
-- ARGV[3]  first_poll_in_ms: a batch with new sent rows is due for polling this long after it is tracked
-- ARGV[4]  G, the number of groups; then per group 2 values: ref, batch number n
-- then one value per item: "g,row,status,err,ts,phone" (the group, the row's index, the provider's status
--          and err, its time in Unix s, our phone for the webhook): one string, so that a call of 500
--          statuses is 500 arguments, not 3,000
-- Returns one number per item: 0 not a sent row of that batch; 1 applied, not final; 2 ignored (older
-- than what the record holds, the same again, or an intermediate status after a final one); 3 applied
-- and final (first final, or after unknown); 4 status -3 (the provider does not know it yet): ignored.
-- Order of statuses: by the provider's timestamp; a final status is never replaced by a non-final one,
-- and between two final ones the later wins (delivered -> read). The unknown of a passed horizon gives
-- way to any later final status (it is queued for the webhook again).
local now = clock_ms(ARGV[1])
local default, first_in, G = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local refs, ns = {}, {}
for g = 1, G do
  refs[g], ns[g] = ARGV[3 + 2 * g], ARGV[4 + 2 * g]
  local new, first = d_track(KEYS[3 * g], KEYS[3 * g + 1], KEYS[3 * g + 2], ns[g], now)
  if new > 0 then redis.call('ZADD', KEYS[2], 'LT', int_s(now + first_in), refs[g]) end
end
local out = {}
local base = 5 + 2 * G
for k = 0, #ARGV - base do
  local gs, is, ss, es, tss, phone = string.match(ARGV[base + k], '^(%d+),(%d+),(-?%d+),(%d+),(%d+),(.*)$')
  local g, i, status, err, ts = tonumber(gs), tonumber(is), tonumber(ss), tonumber(es), tonumber(tss)
  local rkey, dkey = KEYS[3 * g + 1], KEYS[3 * g + 2]
  local result = 2
  if status == -3 then
    result = 4
  else
    local code = status + 10
    if code < 8 or code > 255 then code = 10 end -- not a status the record can hold: "on its way"
    if err < 0 or err > 255 then err = 255 end
    local cur, cur_err, cur_ts, flags = d_get(rkey, i)
    if cur == 0 then
      result = 0
    else
      local new_final, cur_final = d_final(code), d_final(cur)
      local take
      if cur == 1 then take = true
      elseif cur == 2 then take = new_final
      elseif cur_final and not new_final then take = false
      elseif ts < cur_ts then take = false
      elseif ts == cur_ts and (code == cur or (cur_final and new_final)) then take = false
      else take = true end
      if take then
        local notify = new_final and (not cur_final or cur == 2)
        if notify and d_notify(KEYS[1], dkey, refs[g], default, phone, code, err, ts) then
          flags = 1
        end
        d_set(rkey, i, code, err, ts, flags)
        d_count(dkey, cur, code)
        if notify then result = 3 else result = 1 end
      end
    end
  end
  out[k + 1] = result
end
return out
