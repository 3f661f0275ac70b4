-- Rebuilds a ledger Redis lost (or never had) from the durable store's sums: set only if
-- still absent (another replica may have seeded it meanwhile); versions only move forward.
-- If the period moved on since the replica summed it, the next admission's roll resets it.
-- With `force` (an edit set a new reset period or limit: the memory engine's
-- `restart_period`), the period and its spend are set whatever is there; holds stay.
-- KEYS: 1 ledger.  ARGV: 1 force (1/0), 2 reset (n/d/w/m), 3 period start ms or -1,
-- 4 spent, then pairs of key id and version.   Reply: 1 set now, 0 already there.
local led = KEYS[1]
local set = 0
if redis.call('HEXISTS', led, 'seeded') == 0 then
  -- A new ledger: `st` (when, Redis's clock) tells settle.lua which holds it cannot know.
  local now = math.floor(clock_us(0) / 1000)
  redis.call('HSET', led, 'seeded', '1', 'kind', ARGV[2], 'ps', ARGV[3], 'spent', ARGV[4],
    'st', int(now))
  redis.call('HSETNX', led, 'held', '0')
  set = 1
elseif ARGV[1] == '1' then
  redis.call('HSET', led, 'seeded', '1', 'kind', ARGV[2], 'ps', ARGV[3], 'spent', ARGV[4])
  redis.call('HSETNX', led, 'held', '0')
  set = 1
end
for i = 5, #ARGV - 1, 2 do
  local field = 'v:' .. ARGV[i]
  if num(redis.call('HGET', led, field), 0) < tonumber(ARGV[i + 1]) then
    redis.call('HSET', led, field, ARGV[i + 1])
  end
end
return set
