-- Settles one hold: held -= its amount, spent += the actual cost (in the current period),
-- the hold removed and remembered as finished, so a retried settle is a no-op, and a
-- settle of a hold the sweeper charged already is one too (never billed twice).
-- KEYS: 1 ledger, 2 hold hash, 3 holds by expiry, 4 finished marker.
-- ARGV: 1 offset_ms, 2 hold id, 3 actual cost, 4 when it was admitted (ms, 0: unknown).
-- Reply: {1} settled, {2, how it finished: s settled, w swept, r reverted}, {3} unknown.
-- A hold Redis lost with its data (restarted empty, flushed) of a ledger rebuilt since it
-- was admitted (`st`, set by seed.lua): the rebuild summed the durable store, which could
-- not hold this request yet, so its cost is added now (settled, remembered as finished).
local led, hold_key, expiries, done = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local hold, actual, admitted = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local h = redis.call('HMGET', hold_key, 'a', 'l')
local now = math.floor(clock_us(tonumber(ARGV[1])) / 1000)
if not h[1] then
  local finished = redis.call('GET', done)
  if finished then return { 2, finished } end
  local seeded_at = tonumber(redis.call('HGET', led, 'st') or '-1')
  if admitted > 0 and seeded_at > admitted then
    local kind = redis.call('HGET', led, 'kind')
    if kind then roll(led, kind, now) end
    add_saturating(led, 'spent', actual)
    redis.call('SET', done, 's', 'PX', 2 * DAY)
    return { 1 }
  end
  return { 3 }
end
local f = redis.call('HMGET', led, 'kind', 'ps', 'spent', 'held')
add_saturating_read(led, 'held', f[4], -tonumber(h[1]))
local spent = num(f[3], 0)
if f[1] then spent = roll_read(led, f[1], now, f[1], f[2], f[3]) end
add_saturating_read(led, 'spent', spent, actual)
redis.call('DEL', hold_key)
redis.call('ZREM', expiries, hold)
redis.call('SET', done, 's', 'PX', done_ttl(tonumber(h[2])))
return { 1 }
