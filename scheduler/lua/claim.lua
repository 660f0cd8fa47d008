-- claim.lua — the dispatcher's atomic claim of due batches (any number of beats may run it at once).
-- KEYS[1]  due ZSET     (member cid:n, score = due time, ms): the truth of what is queued
-- KEYS[2]  leased ZSET  (member cid:n, score = lease deadline, ms)
-- KEYS[3]  settle ZSET (index of batches queued "settle first": member cid:n, score = due time, ms)
-- ARGV[1]  now_ms: '' = the server's clock (a value only for tests that step time)
-- ARGV[2]  window: most batches leased at once (keeps every worker busy, no more)
-- ARGV[3]  claim_lease_ms: time a claimed batch's task has to start before the sweeper takes it back
-- ARGV[4]  max_claim: most batches claimed by this call
-- ARGV[5]  urgent_extra: urgent batches may be leased beyond the window by at most this many
--          ('' = 0; the ledger passes 14, the login's requests in flight)
-- ARGV[6]  bulk_every: of the claims that normal and bulk batches compete for, bulk gets at least
--          1 in bulk_every ('' = 10)
-- ARGV[7]  '1': answer each member followed by its campaign's lane ('' = the members only)
-- Returns: the claimed members, in the order to send them: settle first, then urgent, then normal and
-- bulk by their shares, then what no lane index held (oldest due first); with ARGV[7] '1' the flat
-- list {member, lane, member, lane, ...}.
--
-- The order (every step only takes batches that are due, ZSCORE in the due ZSET at most now):
-- 1. Settle first: a campaign's fresh batches are all due at its start, so in due order the batches
--    whose outcome is unknown would wait behind every one of them and be settled in one tail at the
--    end; taken first, they are settled alongside the sending (status.php has slots of its own).
-- 2. Urgent: every due urgent batch, before anything else, within window + urgent_extra (so a full
--    window never keeps one waiting, and the window is overrun by urgent batches only, by at most
--    urgent_extra).
-- 3. Normal and bulk, within the window: each claim of the two goes to normal, except that bulk takes
--    it when normal has nothing due or when bulk_every - 1 normal claims in a row went before (the
--    counter `since_bulk` of the lanes HASH, shared by every dispatcher): bulk yields, never starves.
-- 4. Whatever is still due and in no lane (a path that skipped the index, batches queued before the
--    lanes existed), within the window, oldest due first: degraded priority, never lost.
--
-- Within a lane the campaigns share by weighted fair queueing on virtual time: the lane's rotation
-- ZSET `{ns}:lanes:<lane>` holds the campaigns with a due batch, scored by the batches they were given
-- divided by their `weight` (campaign HASH, default 1); a claim serves the lowest score (ties by id)
-- its oldest due batch and adds 1/weight. A campaign joins the rotation (from the lane's wait ZSET
-- `{ns}:lanes:<lane>:wait`, scored by its earliest indexed due time, which the index writers keep)
-- at the lane's virtual clock (`vt:<lane>` of the lanes HASH: the score of the last one served), so
-- a campaign enqueued later is served at once and then in turn, neither behind the earlier ones nor
-- ahead of them for its idle time. A campaign whose next batch is not due goes back to waiting; one
-- with no batch left leaves the lane. Shares count batches (requests), not recipients.
--
-- The per-campaign lane indexes `{ns}:lane:<lane>:<cid>` (member cid:n, score = due time) are written
-- beside the due ZSET by every script that queues a batch (lane_add in _lib.lua) and may be stale: an
-- entry whose batch is no longer in the due ZSET is dropped, one whose batch is due later is moved to
-- that time. Before the lanes, the oldest due batches (up to PROBE) are checked to be reachable through
-- their lane and re-indexed when not, so an unindexed batch is repaired once it is among the oldest
-- due, whatever the load. Cost: O(log N) per batch claimed, per stale entry met (once each) and per
-- campaign joining its rotation (at most PROMOTE a lane per call), never a scan of the due batches.
local PROBE, PROMOTE = 4, 256
local now = clock_ms(ARGV[1])
local now_s = int_s(now)
local extra = math.max(tonumber(ARGV[5] or '') or 0, 0)
local bulk_every = math.max(tonumber(ARGV[6] or '') or 10, 1)
local leased = redis.call('ZCARD', KEYS[2])
local max_claim = tonumber(ARGV[4])
local room = math.min(tonumber(ARGV[2]) - leased, max_claim)           -- settle, normal, bulk, the rest
local uroom = math.min(tonumber(ARGV[2]) + extra - leased, max_claim)  -- urgent (>= room)
if uroom <= 0 then return {} end
local deadline = now + tonumber(ARGV[3])
local P = ns_prefix(KEYS[1])
local CTL = P .. 'lanes'
local refs, their_lanes = {}, {}

local lanes = {}
local function lane(cid)
  local l = lanes[cid]
  if not l then
    l = lane_of(P, cid)
    lanes[cid] = l
  end
  return l
end

local function lease(ref, l)
  redis.call('ZREM', KEYS[1], ref)
  redis.call('ZADD', KEYS[2], deadline, ref)
  refs[#refs + 1] = ref
  their_lanes[#refs] = l
end

-- 1. settle first
if room > 0 then
  for _, ref in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now_s, 'LIMIT', 0, room)) do
    redis.call('ZREM', KEYS[3], ref)
    local due = tonumber(redis.call('ZSCORE', KEYS[1], ref) or '')
    if due and due <= now then  -- still queued and due (the index entry may be stale)
      local l = lane(ref_cid(ref))
      lease(ref, l)
      lane_remove(KEYS[1], ref, l)
    end
  end
end

-- The oldest due batches must be reachable through their lane: indexed at their due time, their
-- campaign in the rotation or waiting (lane_add lowers its wait to this due time).
local oldest = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_s, 'WITHSCORES', 'LIMIT', 0, PROBE)
for i = 1, #oldest, 2 do
  local ref, due = oldest[i], oldest[i + 1]
  local cid = ref_cid(ref)
  local l = lane(cid)
  local at = redis.call('ZSCORE', P .. 'lane:' .. l .. ':' .. cid, ref)
  if not at or tonumber(at) ~= tonumber(due) or not redis.call('ZSCORE', P .. 'lanes:' .. l, cid) then
    lane_add(KEYS[1], ref, due, l)
  end
end

-- Waiting campaigns whose earliest batch is due join the rotation at the lane's virtual clock.
local function promote(l)
  local wkey = P .. 'lanes:' .. l .. ':wait'
  local ready = redis.call('ZRANGEBYSCORE', wkey, '-inf', now_s, 'LIMIT', 0, PROMOTE)
  if #ready == 0 then return end
  local vt = redis.call('HGET', CTL, 'vt:' .. l) or '0'
  local rkey = P .. 'lanes:' .. l
  for _, cid in ipairs(ready) do
    redis.call('ZREM', wkey, cid)
    redis.call('ZADD', rkey, 'NX', vt, cid)
  end
end

-- The next batch of a lane (nil when none of its campaigns has one due): the oldest due batch of the
-- campaign with the lowest virtual time, which then advances by 1/weight.
local served = {}
local function take(l)
  local rkey = P .. 'lanes:' .. l
  while true do
    local top = redis.call('ZRANGE', rkey, 0, 0, 'WITHSCORES')
    if #top == 0 then return nil end
    local cid, vt = top[1], top[2]
    local ikey = P .. 'lane:' .. l .. ':' .. cid
    while true do
      local head = redis.call('ZPOPMIN', ikey)
      if #head == 0 then  -- nothing left: leaves the lane
        redis.call('ZREM', rkey, cid)
        break
      end
      local ref, at = head[1], tonumber(head[2])
      if at > now then  -- nothing due yet: back in the index, the campaign waits for it
        redis.call('ZADD', ikey, head[2], ref)
        redis.call('ZREM', rkey, cid)
        redis.call('ZADD', rkey .. ':wait', head[2], cid)
        break
      end
      local truth = redis.call('ZSCORE', KEYS[1], ref)
      if not truth then  -- stale (taken, done or parked since): dropped
      elseif tonumber(truth) > now then  -- stale: queued again for later
        redis.call('ZADD', ikey, truth, ref)
      else
        lease(ref, l)
        local w = tonumber(redis.call('HGET', P .. 'c:' .. cid, 'weight') or '')
        if not w or w <= 0 then w = 1 end
        redis.call('ZINCRBY', rkey, string.format('%.17g', 1 / w), cid)
        served[l] = vt
        return ref
      end
    end
  end
end

-- 2. urgent
promote('urgent')
while #refs < uroom and take('urgent') do end

-- 3. normal and bulk
if #refs < room then
  promote('normal')
  promote('bulk')
  local since = tonumber(redis.call('HGET', CTL, 'since_bulk') or '0') or 0
  local before = since
  local dry = {}
  while #refs < room do
    local order = {'normal', 'bulk'}
    if since >= bulk_every - 1 then order = {'bulk', 'normal'} end
    local got = nil
    for _, l in ipairs(order) do
      if not dry[l] then
        if take(l) then
          got = l
          break
        end
        dry[l] = true
      end
    end
    if not got then break end
    if got == 'bulk' then since = 0 else since = math.min(since + 1, bulk_every - 1) end
  end
  if since ~= before then redis.call('HSET', CTL, 'since_bulk', since) end
end
for l, vt in pairs(served) do redis.call('HSET', CTL, 'vt:' .. l, vt) end

-- 4. what no lane index held
if #refs < room then
  for _, ref in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_s, 'LIMIT', 0, room - #refs)) do
    local l = lane(ref_cid(ref))
    lease(ref, l)
    lane_remove(KEYS[1], ref, l)
  end
end
if ARGV[7] ~= '1' then return refs end
local out = {}
for i, ref in ipairs(refs) do
  out[2 * i - 1] = ref
  out[2 * i] = their_lanes[i]
end
return out
