-- Takes an admission back: its request was refused after it (refused requests do not
-- count) and never reached a provider, so its hold is released free.
-- KEYS: 1 ledger, 2 window, 3 hold hash, 4 holds by expiry, 5 finished marker.
-- A hold id that is not open is marked finished all the same (unless it finished
-- otherwise): an admission whose answer was lost, reverted by its replica, must not be
-- admitted when it arrives late.
-- ARGV: 1 hold id, 2 lease ms (how long to remember an id that was not open).
-- Reply: 1 taken back, 0 no such open hold.
local led, win, hold_key, expiries, done = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local hold = ARGV[1]
local h = redis.call('HMGET', hold_key, 'a', 't', 'l')
if not h[1] then
  redis.call('SET', done, 'r', 'NX', 'PX', done_ttl(tonumber(ARGV[2])))
  return 0
end
add_saturating(led, 'held', -tonumber(h[1]))
local t = tonumber(h[2])
if t > 0 then window_remove(win, hold, t) end
redis.call('DEL', hold_key)
redis.call('ZREM', expiries, hold)
redis.call('SET', done, 'r', 'PX', done_ttl(tonumber(h[3])))
return 1
