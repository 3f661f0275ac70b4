-- The sweeper's index of owners with holds (score: when to look next). After sweeping an
-- owner, its entry is moved to the owner's next expiry, or removed when it has no hold
-- left, only if no admission touched it since the sweeper read it (each admission
-- decrements the score after writing its hold, so a changed score means a new hold).
-- KEYS: 1 index.   ARGV: 1 owner, 2 the score read, 3 next expiry ms or -1.
local index, owner, seen, next_expiry = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local score = redis.call('ZSCORE', index, owner)
if score ~= seen then return 0 end
if next_expiry < 0 then
  redis.call('ZREM', index, owner)
else
  redis.call('ZADD', index, int(next_expiry), owner)
end
return 1
