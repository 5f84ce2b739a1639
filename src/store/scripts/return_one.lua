-- Returns one entry of a processing list to its source list's tail (taken
-- next), if it is still in the processing list, and records why.
-- KEYS[1]: the processing list
-- KEYS[2]: the source list (a lane of the query queue)
-- KEYS[3]: (optional) the diagnostic feed, to record the event below
-- ARGV[1]: the entry
-- ARGV[2]: (with KEYS[3]) feed MAXLEN (approximate)
-- ARGV[3..]: (with KEYS[3]) the event's field/value pairs
-- Returns 1 when moved, 0 when it was gone already (nothing is written:
-- whoever took it has it).
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  if KEYS[3] then
    local args = {'XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*'}
    for i = 3, #ARGV do
      args[#args + 1] = ARGV[i]
    end
    redis.call(unpack(args))
  end
  return 1
end
return 0
