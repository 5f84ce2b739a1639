-- Removes crystallised grains whose expiry has passed, each with a
-- grain_forgotten event (the daemons run it every maintenance pass).
-- KEYS[1]: the question index; KEYS[2]: the set of every fact id
-- KEYS[3]: the crystallised grains (match key -> expiry, Unix ms)
-- KEYS[4]: the diagnostic feed
-- ARGV[1]: now (Unix ms); ARGV[2]: most to remove; ARGV[3]: the grain key
-- prefix (<p>:grains:); ARGV[4]: feed MAXLEN; ARGV[5]: now (RFC 3339)
-- Returns the number removed.
local err = check_types({'hash', 'set', 'zset', 'stream'})
if err then return err end
return sweep_expired(ARGV[3], KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[4], ARGV[5], ARGV[1],
  tonumber(ARGV[2]))
