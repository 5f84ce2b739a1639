-- Crystallise one worker layer's answer into a grain, atomically, under
-- the policy the daemon checked (confidence, safety) and the parts only
-- Redis can check: the question is not blocked, no loaded grain holds it,
-- it was answered the same way often enough, and the bound holds.
-- KEYS[1]: the grain hash (<p>:grains:crystal:<16 hex>)
-- KEYS[2]: the question index (<p>:grains:index:questions)
-- KEYS[3]: the set of every fact id (<p>:grains:index:all)
-- KEYS[4]: the crystallised grains (<p>:grains:index:crystallized), a sorted
--          set of match keys scored by expiry (Unix ms)
-- KEYS[5]: the question's answer count (<p>:crystal:seen:<match key>)
-- KEYS[6]: the question's block (<p>:crystal:blocked:<match key>)
-- KEYS[7]: the diagnostic feed
-- ARGV[1]: fact id; ARGV[2]: match key; ARGV[3]: the index entry (JSON)
-- ARGV[4..7]: question, answer, confidence, source ('' for none)
-- ARGV[8]: now (RFC 3339); ARGV[9]: expiry (Unix ms); ARGV[10]: expiry (RFC 3339)
-- ARGV[11]: layer; ARGV[12]: worker; ARGV[13]: query id
-- ARGV[14]: the answer's normal form; ARGV[15]: min answers; ARGV[16]: the
--           count's window in seconds
-- ARGV[17]: most crystallised grains; ARGV[18]: now (Unix ms)
-- ARGV[19]: feed MAXLEN; ARGV[20]: the grain key prefix (<p>:grains:)
-- Returns {status, detail, evicted ids...}: 'stored'; 'counting' (detail:
-- answers so far); 'blocked' (detail: ms left); 'loaded' (detail: the
-- grain that holds the question).
-- A reply: {status, detail, …}.
local function reply(...)
  return {...}
end
local err = check_types({'', 'hash', 'set', 'zset', 'hash', '', 'stream'})
if err then return err end
local prefix, maxlen = ARGV[20], ARGV[19]
local blocked = redis.call('PTTL', KEYS[6])
if blocked ~= -2 then
  return reply('blocked', tostring(blocked))
end
local entry = redis.call('HGET', KEYS[2], ARGV[2])
if entry then
  local o = owner(entry)
  if o ~= ARGV[1] then
    return reply('loaded', o or '(an entry that is not JSON)')
  end
end
local min = tonumber(ARGV[15])
if min > 1 then
  local n = 1
  if redis.call('HGET', KEYS[5], 'answer') == ARGV[14] then
    n = redis.call('HINCRBY', KEYS[5], 'n', 1)
  else
    redis.call('HSET', KEYS[5], 'answer', ARGV[14], 'n', 1)
  end
  redis.call('EXPIRE', KEYS[5], ARGV[16])
  if n < min then
    return reply('counting', tostring(n))
  end
end
redis.call('DEL', KEYS[5])
sweep_expired(prefix, KEYS[2], KEYS[3], KEYS[4], KEYS[7], maxlen, ARGV[8], ARGV[18], 16)
local out = reply('stored', '')
if not redis.call('ZSCORE', KEYS[4], ARGV[2]) then
  local over = redis.call('ZCARD', KEYS[4]) - tonumber(ARGV[17]) + 1
  if over > 0 then
    for _, mk in ipairs(redis.call('ZRANGE', KEYS[4], 0, over - 1)) do
      local id = remove_crystal(prefix, KEYS[2], KEYS[3], KEYS[4], mk)
      forgotten(KEYS[7], maxlen, ARGV[8], id,
        'evicted: crystallization.max_grains (' .. ARGV[17] .. ') reached; the grain expiring soonest goes first')
      out[#out + 1] = id
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'question', ARGV[4], 'answer', ARGV[5], 'confidence', ARGV[6],
  'source', ARGV[7], 'created_at', ARGV[8], 'updated_at', ARGV[8], 'hits', 0,
  'match_key', ARGV[2], 'crystallized_by', ARGV[11], 'worker', ARGV[12],
  'query_id', ARGV[13], 'expires_at', ARGV[10], 'expires_ms', ARGV[9])
redis.call('PEXPIREAT', KEYS[1], ARGV[9])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[9], ARGV[2])
local ev = {'XADD', KEYS[7], 'MAXLEN', '~', maxlen, '*', 'event', 'grain_crystallized',
  'ts', ARGV[8], 'query_id', ARGV[13], 'layer', ARGV[11],
  'confidence', string.format('%.4f', tonumber(ARGV[6]))}
if ARGV[12] ~= '' then
  ev[#ev + 1] = 'worker'; ev[#ev + 1] = ARGV[12]
end
ev[#ev + 1] = 'grain'; ev[#ev + 1] = ARGV[1]
ev[#ev + 1] = 'reason'
if ARGV[7] ~= '' then
  ev[#ev + 1] = 'from ' .. ARGV[7] .. '; expires ' .. ARGV[10]
else
  ev[#ev + 1] = 'expires ' .. ARGV[10]
end
redis.call(unpack(ev))
return out
