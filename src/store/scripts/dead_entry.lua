-- Moves an entry that cannot become a query from this daemon's processing
-- list to the dead list, with its record and a `query_failed` event, only
-- while this daemon still holds it.
-- KEYS[1]: this daemon's processing list
-- KEYS[2]: the dead list (<p>:queries:dead)
-- KEYS[3]: the diagnostic feed
-- ARGV[1]: the entry
-- ARGV[2]: the dead-list record (JSON)
-- ARGV[3]: the dead list's cap
-- ARGV[4]: feed MAXLEN (approximate)
-- ARGV[5..]: the event's field/value pairs
-- Returns 1 when moved, 0 when the entry was no longer held (nothing is
-- written: whoever took it over handles it).
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[2])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[3]) - 1)
local args = {'XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*'}
for i = 5, #ARGV do
  args[#args + 1] = ARGV[i]
end
redis.call(unpack(args))
return 1
