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

