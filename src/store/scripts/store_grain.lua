-- Store one grain and keep the question index consistent, atomically.
-- KEYS[1]: the grain hash (<p>:grains:<fact_id>)
-- KEYS[2]: the question index (<p>:grains:index:questions), match key -> entry JSON
-- KEYS[3]: the set of every fact id (<p>:grains:index:all)
-- KEYS[4]: the crystallised grains (<p>:grains:index:crystallized)
-- KEYS[5]: the diagnostic feed
-- ARGV[1]: fact_id
-- ARGV[2]: match key ('' when the question has no content word: not indexed)
-- ARGV[3]: the index entry (JSON)
-- ARGV[4..7]: question, answer, confidence, source ('' for none)
-- ARGV[8]: now (updated_at); ARGV[9]: created_at and ARGV[10]: hits, used when new
-- ARGV[11]: 'replace' overwrites an existing grain, 'keep' leaves it as it is
-- ARGV[12]: the fact the grain was made from (provenance), or ''
-- ARGV[13]: the grain key prefix (<p>:grains:); ARGV[14]: feed MAXLEN
-- A crystallised grain holding the question goes (a loaded grain always
-- wins over a crystallised one), with a grain_forgotten event.
-- Returns {status, displaced}: status 'stored' or 'kept'; displaced is the
-- fact id whose index entry this grain took over ('' when none).
local err = check_types({'hash', 'hash', 'set', 'zset', 'stream'})
if err then return err end
local exists = redis.call('EXISTS', KEYS[1]) == 1
if exists and ARGV[11] == 'keep' then
  return {'kept', ''}
end
-- The old entry goes when the question changed, unless another grain took it.
local old_key = redis.call('HGET', KEYS[1], 'match_key')
if old_key and old_key ~= '' and old_key ~= ARGV[2] then
  local entry = redis.call('HGET', KEYS[2], old_key)
  if entry then
    local o = owner(entry)
    if o == ARGV[1] or o == false then
      redis.call('HDEL', KEYS[2], old_key)
    end
  end
end
redis.call('HSET', KEYS[1], 'question', ARGV[4], 'answer', ARGV[5], 'confidence', ARGV[6],
  'source', ARGV[7], 'updated_at', ARGV[8], 'match_key', ARGV[2])
if ARGV[12] ~= '' then
  redis.call('HSET', KEYS[1], 'from_fact', ARGV[12])
else
  redis.call('HDEL', KEYS[1], 'from_fact')
end
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[9])
redis.call('HSETNX', KEYS[1], 'hits', ARGV[10])
local displaced = ''
if ARGV[2] ~= '' then
  local current = redis.call('HGET', KEYS[2], ARGV[2])
  if current then
    local o = owner(current)
    if o and o ~= ARGV[1] then
      if string.sub(o, 1, 8) == 'crystal:' then
        remove_crystal(ARGV[13], KEYS[2], KEYS[3], KEYS[4], ARGV[2])
        forgotten(KEYS[5], ARGV[14], ARGV[8], o, 'replaced by the loaded grain ' .. ARGV[1])
      else
        displaced = o
      end
    end
  end
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
end
redis.call('SADD', KEYS[3], ARGV[1])
return {'stored', displaced}
