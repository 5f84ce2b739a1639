-- Compare-and-set one query state: the write happens only when nobody wrote
-- the key since the caller read it, so two concurrent updaters never lose
-- each other's change (the caller re-reads and retries on 0).
-- KEYS[1]: the state key (<p>:queries:state:<id>)
-- ARGV[1]: the exact value the caller read
-- ARGV[2]: the new value
-- ARGV[3]: TTL in seconds (the state expires this long after its last write)
-- Returns 1 when written, 0 when the value changed (or vanished) since read.
local current = redis.call('GET', KEYS[1])
if current ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return 1
