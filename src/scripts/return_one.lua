-- Returns one orphaned entry of a processing list to its source list's tail
-- (taken next), if it is still in the processing list.
-- KEYS[1]: the processing list
-- KEYS[2]: the source list (the query queue, or a layer's job list)
-- ARGV[1]: the entry
-- Returns 1 when moved, 0 when it was gone already.
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  return 1
end
return 0
