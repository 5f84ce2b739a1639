-- Drops the jobs at the old end of a layer's job lists whose deadline has
-- passed: nobody waits for their replies any more, and a layer whose last
-- worker stopped would otherwise keep them until the list's cap.
-- KEYS: the layer's job lists (<p>:jobs:<layer> and its lanes'); jobs are
--       LPUSHed, so the oldest are at the tail
-- ARGV[1]: now, in unix ms
-- ARGV[2]: most jobs to drop from one list in one call
-- Returns how many were dropped. A job that is not JSON or has no
-- deadline is left for a worker to answer with an error.
local dropped = 0
for k = 1, #KEYS do
  for _ = 1, tonumber(ARGV[2]) do
    local job = redis.call('LINDEX', KEYS[k], -1)
    if not job then
      break
    end
    local ok, doc = pcall(cjson.decode, job)
    if not (ok and type(doc) == 'table' and type(doc.deadline_ms) == 'number'
        and doc.deadline_ms < tonumber(ARGV[1])) then
      break
    end
    redis.call('RPOP', KEYS[k])
    dropped = dropped + 1
  end
end
return dropped
