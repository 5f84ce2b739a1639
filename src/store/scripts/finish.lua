-- Finishes a batch of queries, each exactly once and only while this
-- daemon holds it: writes its terminal state, takes its entry off the
-- processing list, signals waiting clients, records its decisions and, for
-- a query that ends in the dead list, adds its record there. One call
-- finishes every query the daemon finished since its previous call.
-- KEYS[1]: this daemon's processing list
-- KEYS[2]: the diagnostic feed
-- KEYS[3]: the dead list (<p>:queries:dead)
-- then for query q (1-based): KEYS[2+2q] its state (<p>:queries:state:<id>)
--   and KEYS[3+2q] its completion signal (<p>:queries:done:<id>)
-- ARGV[1]: state TTL in seconds
-- ARGV[2]: completion-signal TTL in seconds
-- ARGV[3]: feed MAXLEN (approximate)
-- ARGV[4]: the dead list's cap
-- ARGV[5]: the number of queries N; then for each query:
--   its terminal state JSON; its processing-list entry; the completion
--   signal's payload (the terminal status); a stored state the daemon judged
--   unusable (not a daemon's writing), which the outcome replaces if it is
--   still there, or ""; a dead-list record to add, or ""; its events (a
--   count E, then per event its field count F and F field/value pairs)
-- Returns one reply per query, in order:
--   1  finished now;
--   2  this very outcome was written already (a retry whose first try's
--      reply was lost);
--   0  the state is terminal already (another daemon finished a duplicate
--      delivery): only the entry is removed;
--  -1  the entry is not in this daemon's processing list: a peer recovered
--      it while this daemon was unresponsive (fenced); nothing is written;
--   an error reply's text (a key of the wrong type): what was written for
--      that query before it stays, and the other queries are unaffected.
local processing, feed, dead = KEYS[1], KEYS[2], KEYS[3]
local maxlen = ARGV[3]

local function finish_one(state_key, done_key, i)
  local state, entry, signal = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local replaces, record = ARGV[i + 3], ARGV[i + 4]
  local current = redis.call('GET', state_key)
  if current then
    if current == state then
      redis.call('LREM', processing, -1, entry)
      return 2
    end
    if not (replaces ~= '' and current == replaces) and is_terminal(current) then
      redis.call('LREM', processing, -1, entry)
      return 0
    end
  end
  if redis.call('LREM', processing, -1, entry) == 0 then
    return -1
  end
  redis.call('SET', state_key, state, 'EX', ARGV[1])
  redis.call('LPUSH', done_key, signal)
  redis.call('EXPIRE', done_key, ARGV[2])
  if record ~= '' then
    redis.call('LPUSH', dead, record)
    redis.call('LTRIM', dead, 0, tonumber(ARGV[4]) - 1)
  end
  xadd_events(feed, nil, i + 5)
  return 1
end

-- The index after query i's arguments (its events are last).
local function skip(i)
  i = i + 5
  local count = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, count do
    i = i + 1 + tonumber(ARGV[i]) * 2
  end
  return i
end

-- Entries are taken to the list's head, so the oldest (which finish
-- first) are near its tail: LREM searches from there (count -1). The feed
-- is trimmed once per call, not per event.
local out = {}
local i = 6
for q = 1, tonumber(ARGV[5]) do
  local ok, code = pcall(finish_one, KEYS[2 + 2 * q], KEYS[3 + 2 * q], i)
  if ok then
    out[q] = code
  elseif type(code) == 'table' and code.err then
    out[q] = code.err
  else
    out[q] = tostring(code)
  end
  i = skip(i)
end
redis.call('XTRIM', feed, 'MAXLEN', '~', maxlen)
return out
