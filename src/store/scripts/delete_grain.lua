-- Delete one grain and its index entry, atomically.
-- KEYS[1]: the grain hash (<p>:grains:<fact_id>); any type is deleted
-- KEYS[2]: the question index (<p>:grains:index:questions)
-- KEYS[3]: the set of every fact id (<p>:grains:index:all)
-- KEYS[4]: the crystallised grains (<p>:grains:index:crystallized)
-- ARGV[1]: fact_id
-- Returns 1 when a grain was deleted, 0 when there was none. The index
-- entry under the grain's match_key goes too, unless another grain owns it.
local err = check_types({'', 'hash', 'set', 'zset'})
if err then return err end
if redis.call('TYPE', KEYS[1]).ok == 'hash' then
  local key = redis.call('HGET', KEYS[1], 'match_key')
  if key and key ~= '' and redis.call('HEXISTS', KEYS[1], 'crystallized_by') == 1 then
    redis.call('ZREM', KEYS[4], key)
  end
  if key and key ~= '' then
    local entry = redis.call('HGET', KEYS[2], key)
    if entry then
      local o = owner(entry)
      if o == ARGV[1] or o == false then
        redis.call('HDEL', KEYS[2], key)
      end
    end
  end
end
local n = redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[3], ARGV[1])
return n
