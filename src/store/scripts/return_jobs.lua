-- Returns jobs of a worker's processing list to the tails of their lanes'
-- job lists (taken next), each by its `priority` field (none, or a name
-- that is not a lane: `normal`).
-- KEYS[1]: the processing list
-- KEYS[2..5]: the layer's job lists, highest lane first (critical, high,
--             normal = <p>:jobs:<layer>, low)
-- ARGV: the jobs to return, each only if still in the processing list; with
--       none, every job in it
-- Returns the jobs moved.
local lanes = {critical = 2, high = 3, normal = 4, low = 5}
local function list_of(job)
  local ok, doc = pcall(cjson.decode, job)
  if ok and type(doc) == 'table' and type(doc.priority) == 'string' then
    return KEYS[lanes[string.lower(doc.priority)] or 4]
  end
  return KEYS[4]
end
local out = {}
if #ARGV == 0 then
  local job = redis.call('RPOP', KEYS[1])
  while job do
    redis.call('RPUSH', list_of(job), job)
    out[#out + 1] = job
    job = redis.call('RPOP', KEYS[1])
  end
else
  for i = 1, #ARGV do
    if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
      redis.call('RPUSH', list_of(ARGV[i]), ARGV[i])
      out[#out + 1] = ARGV[i]
    end
  end
end
return out
