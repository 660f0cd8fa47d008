-- flood.lua — the subscriber flood guard: at most `limit` messages to one number in a chain whose
-- messages follow each other by less than `gap_ms`; admission is counted at once for all workers.
-- KEYS[i]  flood STRING of phone i ("count:last_ms"), expiring gap_ms after the chain's last message
-- ARGV[1]  now_ms: '' = the Redis server's clock (the provider measures the gap by arrival; every host
--          is judged by one clock); a number only where a test steps time
-- ARGV[2]  limit (50: the provider's rule)
-- ARGV[3]  gap_ms (60 s plus a safety margin for the request's travel time)
-- Returns, per phone: 0 = admitted (counted), else the server time (ms) from which it may be sent.
local now, limit, gap = clock_ms(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
for i, key in ipairs(KEYS) do out[i] = flood_admit(key, now, limit, gap) end
return out
