-- Publishes a key's version after a committed edit: set only if greater.
-- KEYS: 1 ledger.   ARGV: 1 key id, 2 version.   Reply: the version stored now.
local led, field, version = KEYS[1], 'v:' .. ARGV[1], tonumber(ARGV[2])
local stored = num(redis.call('HGET', led, field), 0)
if stored < version then
  redis.call('HSET', led, field, ARGV[2])
  return version
end
return stored
