-- Puts one dead-list record's entry back on the queue (the dashboard's
-- requeue), so it is taken again like a new entry.
-- KEYS[1]: the dead list (with ARGV[1] = "", any key of this slot: unused)
-- KEYS[2]: the queue
-- KEYS[3]: the query's state key (unused when ARGV[3] and ARGV[4] are "")
-- KEYS[4]: the query's completion signal (deleted with a reset state)
-- ARGV[1]: the record to take out of the dead list ("" = already taken)
-- ARGV[2]: the entry to push
-- ARGV[3]: the state as read before ("" = do not touch the state)
-- ARGV[4]: the state to write instead (pending again), with ARGV[3]
-- ARGV[5]: the state's TTL in seconds
-- Returns 1 when requeued, 0 when the record was gone already (nothing is
-- written: someone else requeued or deleted it), -1 when the state changed
-- since it was read (nothing is written; read it again).
if ARGV[3] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[3] then
  return -1
end
if ARGV[1] ~= '' and redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then
  return 0
end
if ARGV[3] ~= '' then
  redis.call('SET', KEYS[3], ARGV[4], 'EX', ARGV[5])
  redis.call('DEL', KEYS[4])
end
redis.call('LPUSH', KEYS[2], ARGV[2])
return 1
