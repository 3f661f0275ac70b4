-- Extends the lease of an open hold (its replica is alive and its stream still running)
-- and raises its estimate to what the stream has cost so far.
-- KEYS: 1 hold hash, 2 holds by expiry.   ARGV: 1 offset_ms, 2 hold id, 3 estimate,
-- 4 lease ms.   Reply: the new expiry (ms), or -1 when the hold is no longer open.
local hold_key, expiries = KEYS[1], KEYS[2]
local hold, estimate, lease = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local e = redis.call('HGET', hold_key, 'e')
if not e then return -1 end
local now = math.floor(clock_us(tonumber(ARGV[1])) / 1000)
local expiry = now + lease
local fields = { 'x', int(expiry), 'l', int(lease) }
if estimate > tonumber(e) then
  fields[#fields + 1] = 'e'
  fields[#fields + 1] = int(estimate)
end
redis.call('HSET', hold_key, unpack(fields))
redis.call('ZADD', expiries, int(expiry), hold)
return expiry
