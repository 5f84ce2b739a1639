-- Returns every entry of a processing list to the queue's tail, where they
-- are taken next (clients LPUSH at the head; daemons take from the tail).
-- KEYS[1]: the processing list
-- KEYS[2]: the queue
-- Returns the entries moved.
local out = {}
local entry = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'RIGHT')
while entry do
  out[#out + 1] = entry
  entry = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'RIGHT')
end
return out
