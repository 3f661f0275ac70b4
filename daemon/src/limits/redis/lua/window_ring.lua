-- The rolling window as a ring of the last N admission times (ms, 8-byte doubles) in one
-- string: a 24-byte header (capacity n, next write slot h, filled slots c), then n slots.
-- A request is admitted when fewer than N of the newest N times lie in the last 60 s,
-- which is exactly "fewer than N admitted in any rolling 60 s". An admission costs a binary
-- search (O(log N) probes, read in 512-byte blocks) and O(1) writes whatever N; a changed limit
-- rewrites the ring once, O(N).
-- Times only grow (an admission is never counted earlier than the newest one), so the
-- slots are sorted and the first one in the window is found by binary search.

local HEADER = 24

local function ring_meta(win)
  local s = redis.call('GETRANGE', win, 0, HEADER - 1)
  if #s < HEADER then return 0, 0, 0 end
  local n, h, c = struct.unpack('<ddd', s)
  return n, h, c
end

-- Slots are read in blocks of 64 (512 B), each fetched once per script and unpacked in
-- Lua: a ring of up to 64 slots is one read; a binary search over 10,000 slots reads about
-- nine blocks. (Measured: 4 KB blocks cost more than they save; 8-byte reads, 16 a search,
-- cost about the same as 64-slot blocks.)
local BLOCK = 64

-- A reader of the ring's logical slots (0 = oldest of the c filled): `at(i)` is a time.
local function ring_reader(win, n, h, c)
  local blocks = {}
  return function(i)
    local p = (h - c + i) % n
    local b = math.floor(p / BLOCK)
    local block = blocks[b]
    if block == nil then
      local from = HEADER + b * BLOCK * 8
      block = redis.call('GETRANGE', win, from, from + BLOCK * 8 - 1)
      blocks[b] = block
    end
    return (struct.unpack('<d', block, (p - b * BLOCK) * 8 + 1))
  end
end

-- What `window_scan` read, for `window_add` in the same script (no second read).
local scanned = nil

-- Rewrites the ring with capacity `capacity`, keeping its newest `keep` times.
local function ring_resize(win, n, h, c, capacity, keep)
  local at = ring_reader(win, n, h, c)
  local parts = { struct.pack('<ddd', capacity, keep % capacity, keep) }
  for i = c - keep, c - 1 do
    parts[#parts + 1] = struct.pack('<d', at(i))
  end
  redis.call('SET', win, table.concat(parts), 'PX', WINDOW * 2)
  return capacity, keep % capacity, keep
end

-- How many admissions lie in the window at `now_us` (at most `limit` counted), and the
-- time (ms, nil when none) of the one whose leaving frees a slot: the oldest in the window,
-- or with `limit` or more in it, the `limit`-th newest.
-- The ring holds every admission still in the window: it grows with a raised limit before
-- admitting, and a lowered limit shrinks it only once no more than `limit` are in the
-- window (so lowering and raising again never forgets one).
local function window_scan(win, limit, now_us, writable)
  local n, h, c = ring_meta(win)
  if c == 0 then return 0, nil end
  if n < limit and writable then
    n, h, c = ring_resize(win, n, h, c, limit, c)
  end
  local at = ring_reader(win, n, h, c)
  local lo, hi = 0, c
  -- The first slot whose time is still in the window.
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if (at(mid) + WINDOW) * 1000 > now_us then hi = mid else lo = mid + 1 end
  end
  scanned = { n = n, h = h, c = c, at = at }
  local inside = c - lo
  if inside == 0 then return 0, nil end
  if inside >= limit then
    return limit, at(c - limit)
  end
  local oldest = at(lo)
  if n > limit and writable then
    ring_resize(win, n, h, c, limit, inside)
    scanned = nil
  end
  return inside, oldest
end

-- Records an admission at `now_us`, counted at the next whole millisecond (never earlier
-- than the newest one); returns its time (ms). `window_scan` has resized the ring.
local function window_add(win, limit, now_us, member)
  local n, h, c, at
  if scanned then
    n, h, c, at = scanned.n, scanned.h, scanned.c, scanned.at
  else
    n, h, c = ring_meta(win)
    at = ring_reader(win, n, h, c)
  end
  if c == 0 then n, h = limit, 0 end
  local t = math.ceil(now_us / 1000)
  if c > 0 then
    local newest = at(c - 1)
    if newest > t then t = newest end
  end
  redis.call('SETRANGE', win, HEADER + h * 8, struct.pack('<d', t))
  h = (h + 1) % n
  if c < n then c = c + 1 end
  redis.call('SETRANGE', win, 0, struct.pack('<ddd', n, h, c))
  redis.call('PEXPIRE', win, WINDOW * 2)
  return t
end

-- Takes back the admission counted at `t`: the newest slot holding `t` goes, the newer
-- ones move down one (a revert follows its admission closely, so that is a few slots).
local function window_remove(win, member, t)
  local n, h, c = ring_meta(win)
  local at = ring_reader(win, n, h, c)
  local found = nil
  for i = c - 1, 0, -1 do
    local v = at(i)
    if v == t then found = i break end
    if v < t then break end
  end
  if found == nil then return end
  for i = found, c - 2 do
    local p = (h - c + i) % n
    local v = at(i + 1)
    redis.call('SETRANGE', win, HEADER + p * 8, struct.pack('<d', v))
  end
  redis.call('SETRANGE', win, 0, struct.pack('<ddd', n, (h - 1) % n, c - 1))
end
