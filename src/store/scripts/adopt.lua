-- Turns a JSON entry of this daemon's processing list into a query: writes
-- its state (unless one exists) and replaces the entry with the query's id,
-- atomically, only while the entry is still this daemon's, and safe to
-- repeat when the reply to an earlier try was lost.
-- KEYS[1]: this daemon's processing list
-- KEYS[2]: the query's state (<p>:queries:state:<id>)
-- ARGV[1]: the JSON entry
-- ARGV[2]: the query id (the new entry)
-- ARGV[3]: the state JSON
-- ARGV[4]: state TTL in seconds
-- Returns 1 when adopted now, 2 when an earlier try adopted it (the JSON is
-- gone and the id is there), 0 when neither is in the list (a peer
-- recovered the entry: nothing is written).
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('SET', KEYS[2], ARGV[3], 'NX', 'EX', ARGV[4])
  redis.call('LPUSH', KEYS[1], ARGV[2])
  return 1
end
if redis.call('LPOS', KEYS[1], ARGV[2]) then
  return 2
end
return 0
