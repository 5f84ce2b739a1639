-- Takes up to ARGV[1] queries at once: moves entries from the queue's tail
-- (oldest first; clients LPUSH at the head) to the head of one daemon's
-- processing list, so a taken query is never only in a daemon's memory.
-- KEYS[1]: the queue (<p>:queries:queue)
-- KEYS[2]: this daemon's processing list (<p>:queries:processing:<instance>)
-- ARGV[1]: most entries to move
-- Returns the moved entries, oldest first (possibly none).
local out = {}
for _ = 1, tonumber(ARGV[1]) do
  local entry = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not entry then
    break
  end
  out[#out + 1] = entry
end
return out
