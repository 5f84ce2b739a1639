-- Prelude shared by the scripts that write a query's state (prepended to
-- each by the Rust side, so every script stays one EVALSHA).
--
-- is_terminal(raw): whether a stored state names a terminal status. Cheap
-- test first: the first "status" key is the top-level one in every state a
-- daemon writes (query_id and query_text come first, and a string value
-- cannot hold an unescaped quote). Only when it names a terminal status
-- (rare on the paths that ask) is the document decoded, so a nested
-- "status" in a state another client wrote cannot pass for the query's.
local function is_terminal(raw)
  local s = string.match(raw, '"status"%s*:%s*"(%a+)"')
  if s == 'answered' or s == 'unanswered' or s == 'failed' then
    local ok, doc = pcall(cjson.decode, raw)
    return ok and type(doc) == 'table' and doc.status == s
  end
  return false
end

-- xadd_events(feed, maxlen, i): XADDs the events encoded in ARGV from
-- index i on (a count E, then per event its field count F and F
-- field/value pairs), each trimming the feed to about maxlen unless
-- maxlen is nil (the caller trims); returns the index after them.
local function xadd_events(feed, maxlen, i)
  local count = tonumber(ARGV[i])
  i = i + 1
  for _ = 1, count do
    local last = i + tonumber(ARGV[i]) * 2
    if maxlen then
      redis.call('XADD', feed, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, i + 1, last))
    else
      redis.call('XADD', feed, '*', unpack(ARGV, i + 1, last))
    end
    i = last + 1
  end
  return i
end

