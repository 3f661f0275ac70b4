-- The rolling window as a sorted-set log: member = hold id, score = admission time (ms).
-- Exact; O(log N) per admission, but memory O(N) entries of a skiplist once past 128.
-- Kept beside the ring for the measurement in the engine's tests (ARCHITECTURE.md).

-- How many of the admissions lie in the window at `now_us`, and the one whose leaving
-- frees a slot (ms, nil when none).
local function window_scan(win, limit, now_us, writable)
  -- In the window while (t + 60 s) * 1000 > now_us: for an integer t, t >= floor(b) + 1
  -- with b = now_us / 1000 - 60 s.
  local stale = math.floor((now_us - WINDOW * 1000) / 1000)
  local count
  if writable then
    redis.call('ZREMRANGEBYSCORE', win, '-inf', int(stale))
    count = redis.call('ZCARD', win)
  else
    count = redis.call('ZCOUNT', win, int(stale + 1), '+inf')
  end
  if count == 0 then return 0, nil end
  local skip = 0
  if count >= limit then skip = count - limit end
  local oldest = redis.call('ZRANGEBYSCORE', win, int(stale + 1), '+inf', 'WITHSCORES',
    'LIMIT', skip, 1)
  return math.min(count, limit), tonumber(oldest[2])
end

local function window_add(win, limit, now_us, member)
  local t = math.ceil(now_us / 1000)
  redis.call('ZADD', win, int(t), member)
  redis.call('PEXPIRE', win, WINDOW * 2)
  return t
end

local function window_remove(win, member, t)
  redis.call('ZREM', win, member)
end
