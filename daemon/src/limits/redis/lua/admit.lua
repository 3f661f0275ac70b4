-- One admission, all or nothing (prepended: lib.lua and a window implementation).
-- KEYS: 1 ledger hash, 2 window, 3 this hold's hash, 4 the owner's holds by expiry,
--       5 this hold's "finished" marker.
-- ARGV: 1 offset_ms, 2 key id, 3 version, 4 hold id, 5 rate limit (0: none),
--       6 spend limited (1/0), 7 limit, 8 reset (n/d/w/m), 9 worst, 10 clamp floor (-1:
--       no clamp), 11 estimate, 12 lease ms, 13 what the request was (for the usage record
--       a sweep writes: the replica's text, kept as it is).
-- Replies (first element is the tag, decoded in outcome.rs):
--   {1, amount, clamped, rate limit, remaining, reset after ms, lease expiry ms, repeated}
--   {2, rate limit, retry after ms}       {3, resets at ms or -1}
--   {4, headroom, resets at ms or -1}     {5, stored version}
--   {6, now ms, period start ms or -1}    {7}  (the hold id is already finished)
local led, win, hold_key, expiries, done = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local key_id, version, hold = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local rate, spend_limited = tonumber(ARGV[5]), ARGV[6] == '1'
local limit, kind, worst, clamp_floor = tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local estimate, lease, what = tonumber(ARGV[11]), tonumber(ARGV[12]), ARGV[13]
local now_us = clock_us(tonumber(ARGV[1]))
local now = math.floor(now_us / 1000)

-- The same hold id again: the answer given the first time (an admission whose answer was
-- lost is retried by id and never counted twice).
-- One call for both in the usual case (neither exists).
if redis.call('EXISTS', hold_key, done) > 0 then
  local held = redis.call('HMGET', hold_key, 'a', 'c', 'rl', 'rr', 'rs', 'x')
  if held[1] then
    return { 1, tonumber(held[1]), tonumber(held[2]), tonumber(held[3]), tonumber(held[4]),
      tonumber(held[5]), tonumber(held[6]), 1 }
  end
  return { 7 }
end

-- The ledger's fields, read once.
local version_field = 'v:' .. key_id
local f = redis.call('HMGET', led, 'seeded', version_field, 'kind', 'ps', 'spent', 'held')

-- A ledger Redis does not have (first use, restart, flush): rebuilt from the durable store.
if not f[1] then
  local start = -1
  if spend_limited and kind ~= 'n' then start = period(kind, now) end
  return { 6, now, start }
end

-- The key's version: a newer one means the replica's copy is stale.
local stored = num(f[2], 0)
if stored > version then
  return { 5, stored }
end
if stored < version then
  redis.call('HSET', led, version_field, int(version))
end
if rate == 0 and not spend_limited and estimate == 0 then
  return { 1, 0, 0, 0, 0, 0, 0, 0 }
end

-- Rate: refused requests are not recorded.
local used, oldest = 0, nil
if rate > 0 then
  used, oldest = window_scan(win, rate, now_us, true)
  if used >= rate then
    return { 2, rate, leaves_in(oldest, now_us) }
  end
end

-- Spend: spent + held + worst <= limit, else the clamp, else a refusal (spend/ledger.rs).
local amount, clamped = 0, 0
if spend_limited then
  local spent = roll_read(led, kind, now, f[3], f[4], f[5])
  local resets_at = -1
  if kind ~= 'n' then
    local _, ends = period(kind, now)
    resets_at = ends
  end
  local open = num(f[6], 0)
  if spent >= limit then
    return { 3, resets_at }
  end
  local headroom = limit - spent - open
  if headroom < 0 then headroom = 0 end
  if worst <= headroom then
    amount = worst
  elseif clamp_floor >= 0 and clamp_floor <= headroom then
    amount, clamped = headroom, 1
  else
    return { 4, headroom, resets_at }
  end
  add_saturating_read(led, 'held', open, amount)
  if estimate > amount then estimate = amount end
end

-- Admitted: the window's slot and the hold, a lease on Redis's clock.
local t, remaining, reset_after = 0, 0, 0
if rate > 0 then
  t = window_add(win, rate, now_us, hold)
  remaining = rate - used - 1
  reset_after = leaves_in(oldest or t, now_us)
end
local expiry = now + lease
redis.call('HSET', hold_key, 'a', int(amount), 'e', int(estimate), 'x', int(expiry),
  'k', key_id, 't', int(t), 'l', int(lease), 'c', clamped, 'rl', int(rate),
  'rr', int(remaining), 'rs', int(reset_after), 'q', what)
redis.call('ZADD', expiries, int(expiry), hold)
return { 1, amount, clamped, rate, remaining, reset_after, expiry, 0 }
