-- Finishes one query exactly once: writes its terminal state, then takes its
-- entry off the processing list, signals waiting clients and records the
-- decisions. When the state is terminal already (another daemon finished a
-- duplicate delivery), only the entry is removed.
-- KEYS[1]: the state (<p>:queries:state:<id>)
-- KEYS[2]: this daemon's processing list
-- KEYS[3]: the completion signal (<p>:queries:done:<id>)
-- KEYS[4]: the diagnostic feed
-- ARGV[1]: the terminal state JSON
-- ARGV[2]: the processing-list entry
-- ARGV[3]: state TTL in seconds
-- ARGV[4]: completion-signal TTL in seconds
-- ARGV[5]: completion-signal payload (the terminal status)
-- ARGV[6]: feed MAXLEN (approximate)
-- ARGV[7]: a stored state the daemon judged unusable (not a daemon's
--          writing), which the outcome replaces if it is still there; or ""
-- ARGV[8]: number of events E; then for each event: its field count F and
--          F field/value pairs
-- Returns 1 when the query was finished now, 0 when it was terminal already.
local current = redis.call('GET', KEYS[1])
if current and not (ARGV[7] ~= '' and current == ARGV[7]) then
  -- Cheap test first: the first "status" key is the top-level one in every
  -- state a daemon writes (query_id and query_text come first, and a string
  -- value cannot hold an unescaped quote). Only when it names a terminal
  -- status (a duplicate delivery: rare) is the document decoded, so a nested
  -- "status" in a state another client wrote cannot pass for the query's.
  local s = string.match(current, '"status"%s*:%s*"(%a+)"')
  if s == 'answered' or s == 'unanswered' or s == 'failed' then
    local ok, doc = pcall(cjson.decode, current)
    if ok and type(doc) == 'table' and doc.status == s then
      redis.call('LREM', KEYS[2], 1, ARGV[2])
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3])
redis.call('LREM', KEYS[2], 1, ARGV[2])
redis.call('LPUSH', KEYS[3], ARGV[5])
redis.call('EXPIRE', KEYS[3], ARGV[4])
local i = 9
for _ = 1, tonumber(ARGV[8]) do
  local n = tonumber(ARGV[i])
  local args = {'XADD', KEYS[4], 'MAXLEN', '~', ARGV[6], '*'}
  for j = 1, n * 2 do
    args[#args + 1] = ARGV[i + j]
  end
  redis.call(unpack(args))
  i = i + 1 + n * 2
end
return 1
