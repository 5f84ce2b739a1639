-- Prelude of the grain scripts (prepended to each by the Rust side).
--
-- check_types(wanted) fails a script on a wrong-typed key before anything
-- is written (a Lua error does not undo earlier writes); owner(entry) reads
-- the fact id of a question-index entry.
local function check_types(wanted)
  for i, want in ipairs(wanted) do
    local t = redis.call('TYPE', KEYS[i]).ok
    if want ~= '' and t ~= 'none' and t ~= want then
      return redis.error_reply('WRONGTYPE key ' .. i .. ' holds a ' .. t .. ', expected a ' .. want)
    end
  end
  return nil
end
-- The fact id an index entry belongs to; false when the entry is not JSON.
local function owner(entry)
  local ok, v = pcall(cjson.decode, entry)
  if ok and type(v) == 'table' and type(v.fact_id) == 'string' then
    return v.fact_id
  end
  return false
end

-- The id of the crystallised grain of a match key: 'crystal:' and the
-- first 16 hex digits of its SHA-1 (the Rust side computes the same).
local function crystal_id(match_key)
  return 'crystal:' .. string.sub(redis.sha1hex(match_key), 1, 16)
end
-- Removes the crystallised grain of match key mk: its hash, its index entry
-- (if it still owns it), its id and its expiry. Returns its id.
local function remove_crystal(prefix, index, ids, crystals, mk)
  local id = crystal_id(mk)
  local entry = redis.call('HGET', index, mk)
  if entry and owner(entry) == id then
    redis.call('HDEL', index, mk)
  end
  redis.call('DEL', prefix .. id)
  redis.call('SREM', ids, id)
  redis.call('ZREM', crystals, mk)
  return id
end
-- Records that a grain went, and why.
local function forgotten(feed, maxlen, ts, id, reason)
  redis.call('XADD', feed, 'MAXLEN', '~', maxlen, '*', 'event', 'grain_forgotten',
    'ts', ts, 'grain', id, 'reason', reason)
end
-- Removes up to `limit` crystallised grains whose expiry has passed.
local function sweep_expired(prefix, index, ids, crystals, feed, maxlen, ts, now, limit)
  local expired = redis.call('ZRANGEBYSCORE', crystals, '-inf', now, 'LIMIT', 0, limit)
  for _, mk in ipairs(expired) do
    local id = remove_crystal(prefix, index, ids, crystals, mk)
    forgotten(feed, maxlen, ts, id, 'expired')
  end
  return #expired
end
