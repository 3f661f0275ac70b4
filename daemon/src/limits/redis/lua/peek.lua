-- What self-service shows, read only: the window's headroom, the period's spend (as rolled
-- to now, without writing the roll), what is held, the open holds, the key's version.
-- KEYS: 1 ledger, 2 window, 3 holds by expiry.
-- ARGV: 1 offset_ms, 2 key id, 3 rate limit (0: none), 4 reset (n/d/w/m).
-- Reply: {seeded, version, used, reset after ms, spent, held, period start or -1,
--         resets at or -1, open holds, now ms}.
local led, win, expiries = KEYS[1], KEYS[2], KEYS[3]
local rate, kind = tonumber(ARGV[3]), ARGV[4]
local now_us = clock_us(tonumber(ARGV[1]))
local now = math.floor(now_us / 1000)
local used, reset_after = 0, 0
if rate > 0 then
  local oldest
  used, oldest = window_scan(win, rate, now_us, false)
  if oldest then reset_after = leaves_in(oldest, now_us) end
end
local l = redis.call('HMGET', led, 'seeded', 'v:' .. ARGV[2], 'kind', 'ps', 'spent', 'held')
local stored_kind = l[3] or 'n'
local spent = num(l[5], 0)
local start, ends = -1, -1
if kind ~= 'n' then
  local s, e = period(kind, now)
  start, ends = s, e
  if stored_kind ~= 'n' and num(l[4], -1) < period(stored_kind, now) then spent = 0 end
end
return { l[1] and 1 or 0, num(l[2], 0), used, reset_after, spent, num(l[6], 0), start, ends,
  redis.call('ZCARD', expiries), now }
