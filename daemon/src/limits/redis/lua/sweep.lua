-- Charges the holds of one owner whose lease has passed their ESTIMATE (the provider may
-- have billed the request: never released free), and remembers them as finished.
-- KEYS: 1 ledger, 2 holds by expiry. The holds' own keys are named from ARGV 2 and 3:
-- they share the owner's hash tag, so the script still touches one slot.
-- ARGV: 1 offset_ms, 2 hold key prefix, 3 finished marker prefix, 4 at most this many.
-- Reply: {next expiry ms or -1, n, hold id, key id, estimate, what, ...}.
local led, expiries = KEYS[1], KEYS[2]
local hold_prefix, done_prefix, most = ARGV[2], ARGV[3], tonumber(ARGV[4])
local now = math.floor(clock_us(tonumber(ARGV[1])) / 1000)
local expired = redis.call('ZRANGEBYSCORE', expiries, '-inf', int(now), 'LIMIT', 0, most)
local reply = { -1, 0 }
for _, hold in ipairs(expired) do
  local hold_key = hold_prefix .. hold
  local h = redis.call('HMGET', hold_key, 'a', 'e', 'k', 'l', 'q')
  redis.call('ZREM', expiries, hold)
  if h[1] then
    add_saturating(led, 'held', -tonumber(h[1]))
    local kind = redis.call('HGET', led, 'kind')
    if kind then roll(led, kind, now) end
    add_saturating(led, 'spent', tonumber(h[2]))
    redis.call('DEL', hold_key)
    redis.call('SET', done_prefix .. hold, 'w', 'PX', done_ttl(tonumber(h[4])))
    reply[#reply + 1] = hold
    reply[#reply + 1] = h[3]
    reply[#reply + 1] = tonumber(h[2])
    reply[#reply + 1] = h[5] or ''
    reply[2] = reply[2] + 1
  end
end
local next_hold = redis.call('ZRANGE', expiries, 0, 0, 'WITHSCORES')
if next_hold[2] then reply[1] = tonumber(next_hold[2]) end
return reply
