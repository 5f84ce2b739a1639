-- Hands one job to a worker layer, only while this daemon holds the query:
-- writes the query's state so far and the decisions buffered since the last
-- write, then pushes the job unless the layer's job list is full, and
-- records the `layer_attempt` event only when the job was pushed. The
-- ownership check, the writes and the cap check are one step, so a daemon
-- that stalled while a peer recovered and finished its query never
-- rewrites that query's state nor hands out its job, and concurrent queries
-- of one or many daemons never push past the cap together.
-- KEYS[1]: the job list of the query's lane (<p>:jobs:<layer>[:<lane>])
-- KEYS[2]: the diagnostic feed
-- KEYS[3]: the query's state (<p>:queries:state:<id>)
-- KEYS[4]: this daemon's processing list
-- KEYS[5]: the layer's bell (<p>:jobs:<layer>:bell), rung with a pushed
--          job (one token at most) so an idle worker wakes
-- ARGV[1]: the job JSON
-- ARGV[2]: the cap (orchestrator.max_jobs_per_layer)
-- ARGV[3]: feed MAXLEN (approximate)
-- ARGV[4]: the processing-list entry
-- ARGV[5]: the state JSON (status `processing`)
-- ARGV[6]: state TTL in seconds
-- ARGV[7]: number of buffered events E; then for each event: its field
--          count F and F field/value pairs
-- ARGV[after the events..]: the layer_attempt event's field/value pairs
-- Returns {code, n}:
--   {1, len}  pushed; len is the list's length after the push;
--   {2, len}  the list was full: state and events written, no job, no
--             layer_attempt;
--   {0, 0}    the state is terminal already (finished elsewhere): only the
--             entry is removed from the processing list;
--   {-1, 0}   the entry is not in this daemon's processing list (a peer
--             recovered it): nothing written.
local current = redis.call('GET', KEYS[3])
if current and is_terminal(current) then
  redis.call('LREM', KEYS[4], 1, ARGV[4])
  return {0, 0}
end
if not redis.call('LPOS', KEYS[4], ARGV[4]) then
  return {-1, 0}
end
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6])
local i = xadd_events(KEYS[2], ARGV[3], 7)
local len = redis.call('LLEN', KEYS[1])
if len >= tonumber(ARGV[2]) then
  return {2, len}
end
len = redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LPUSH', KEYS[5], 1)
redis.call('LTRIM', KEYS[5], 0, 0)
local args = {'XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*'}
for j = i, #ARGV do
  args[#args + 1] = ARGV[j]
end
redis.call(unpack(args))
return {1, len}
