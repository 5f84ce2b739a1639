-- Takes up to ARGV[1] entries from a partition's priority lanes into one
-- daemon's processing list (oldest first within a lane: clients LPUSH at
-- the head, entries leave from the tail), so a taken query is never only
-- in a daemon's memory. The highest lane with entries goes first, except
-- that a lower lane is served whenever its credit reaches 1: at each take,
-- every lane with entries earns its minimum share of credit (at most 1),
-- and the lane served spends 1 (not below 0). So a lane with share s gets
-- at least about one take in 1/s while it has entries, however busy the
-- lanes above it are.
-- KEYS[1]: the daemon's processing list
-- KEYS[2..5]: the lanes, highest first (critical, high, normal, low)
-- ARGV[1]: most entries to move
-- ARGV[2..5]: each lane's credit before (the daemon keeps them)
-- ARGV[6..9]: each lane's minimum share
-- ARGV[10]: most entries to move from the lower lanes (normal and low),
--           whose in-flight slots the daemon may have used up; a lane it
--           may not take from neither is served nor earns credit
-- Returns {n, entry 1..n, lane (1-4) of entry 1..n, credit 1..4 after}.
local credit, share, len = {}, {}, {}
for l = 1, 4 do
  credit[l] = tonumber(ARGV[1 + l])
  share[l] = tonumber(ARGV[5 + l])
  len[l] = redis.call('LLEN', KEYS[1 + l])
end
local lower_max, lower_taken = tonumber(ARGV[10]), 0
local entries, lanes = {}, {}
for _ = 1, tonumber(ARGV[1]) do
  local pick, first = nil, nil
  for l = 1, 4 do
    if len[l] > 0 and (l <= 2 or lower_taken < lower_max) then
      first = first or l
      credit[l] = math.min(credit[l] + share[l], 1)
      if credit[l] >= 1 and (pick == nil or credit[l] > credit[pick]) then
        pick = l
      end
    end
  end
  pick = pick or first
  if not pick then
    break
  end
  local entry = redis.call('LMOVE', KEYS[1 + pick], KEYS[1], 'RIGHT', 'LEFT')
  if entry then
    entries[#entries + 1] = entry
    lanes[#lanes + 1] = pick
    credit[pick] = math.max(credit[pick] - 1, 0)
    len[pick] = len[pick] - 1
    if pick > 2 then
      lower_taken = lower_taken + 1
    end
  else
    len[pick] = 0
  end
end
local out = {#entries}
for i = 1, #entries do out[#out + 1] = entries[i] end
for i = 1, #lanes do out[#out + 1] = lanes[i] end
for l = 1, 4 do out[#out + 1] = tostring(credit[l]) end
return out
