-- Finishes one query exactly once, and only while this daemon holds it:
-- writes its terminal state, takes its entry off the processing list,
-- signals waiting clients, records the decisions and, for a query that
-- ends in the dead list, adds its record there.
-- KEYS[1]: the state (<p>:queries:state:<id>)
-- KEYS[2]: this daemon's processing list
-- KEYS[3]: the completion signal (<p>:queries:done:<id>)
-- KEYS[4]: the diagnostic feed
-- KEYS[5]: the dead list (<p>:queries:dead)
-- ARGV[1]: the terminal state JSON
-- ARGV[2]: the processing-list entry
-- ARGV[3]: state TTL in seconds
-- ARGV[4]: completion-signal TTL in seconds
-- ARGV[5]: completion-signal payload (the terminal status)
-- ARGV[6]: feed MAXLEN (approximate)
-- ARGV[7]: a stored state the daemon judged unusable (not a daemon's
--          writing), which the outcome replaces if it is still there; or ""
-- ARGV[8]: a dead-list record to add, or ""
-- ARGV[9]: the dead list's cap
-- ARGV[10]: number of events E; then for each event: its field count F and
--          F field/value pairs
-- Returns:
--   1  finished now;
--   2  this very outcome was written already (a retry whose first try's
--      reply was lost);
--   0  the state is terminal already (another daemon finished a duplicate
--      delivery): only the entry is removed;
--  -1  the entry is not in this daemon's processing list: a peer recovered
--      it while this daemon was unresponsive (fenced); nothing is written.
local current = redis.call('GET', KEYS[1])
if current then
  if current == ARGV[1] then
    redis.call('LREM', KEYS[2], 1, ARGV[2])
    return 2
  end
  if not (ARGV[7] ~= '' and current == ARGV[7]) and is_terminal(current) then
    redis.call('LREM', KEYS[2], 1, ARGV[2])
    return 0
  end
end
if redis.call('LREM', KEYS[2], 1, ARGV[2]) == 0 then
  return -1
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('LPUSH', KEYS[3], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[4])
if ARGV[8] ~= '' then
  redis.call('LPUSH', KEYS[5], ARGV[8])
  redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[9]) - 1)
end
xadd_events(KEYS[4], ARGV[6], 10)
return 1
