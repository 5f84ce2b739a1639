-- Hands one job to a worker layer unless that layer's job list is full, and
-- records the `layer_attempt` event only when the job was pushed. The check
-- and the push are one step, so concurrent queries of one or many daemons
-- never push past the cap together, and a worker that reports healthy but
-- takes nothing cannot make the list grow without bound.
-- KEYS[1]: the layer's job list (<p>:jobs:<layer>)
-- KEYS[2]: the diagnostic feed
-- ARGV[1]: the job JSON
-- ARGV[2]: the cap (orchestrator.max_jobs_per_layer)
-- ARGV[3]: feed MAXLEN (approximate)
-- ARGV[4..]: the layer_attempt event's field/value pairs
-- Returns the list's length after the push, or -(its length) when it was
-- full and nothing was pushed nor recorded.
local len = redis.call('LLEN', KEYS[1])
if len >= tonumber(ARGV[2]) then
  return -len
end
len = redis.call('LPUSH', KEYS[1], ARGV[1])
local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*'}
for i = 4, #ARGV do
  args[#args + 1] = ARGV[i]
end
redis.call(unpack(args))
return len
