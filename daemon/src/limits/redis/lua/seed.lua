-- Rebuilds a ledger Redis lost (or never had) from the durable store's sums: set only if
-- still absent (another replica may have seeded it meanwhile); versions only move forward.
-- If the period moved on since the replica summed it, the next admission's roll resets it.
-- KEYS: 1 ledger.  ARGV: 1 reset (n/d/w/m), 2 period start ms or -1, 3 spent,
-- then pairs of key id and version.   Reply: 1 seeded now, 0 already there.
local led = KEYS[1]
local seeded = 0
if redis.call('HEXISTS', led, 'seeded') == 0 then
  redis.call('HSET', led, 'seeded', '1', 'kind', ARGV[1], 'ps', ARGV[2], 'spent', ARGV[3])
  redis.call('HSETNX', led, 'held', '0')
  seeded = 1
end
for i = 4, #ARGV - 1, 2 do
  local field = 'v:' .. ARGV[i]
  if num(redis.call('HGET', led, field), 0) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', led, field, ARGV[i + 1])
  end
end
return seeded
