-- The rolling window as a ring of the last N admission times (ms, 8-byte doubles) in one
-- string: a 40-byte header (capacity n, next write slot h, slots c still counted, the newest
-- time, and Redis's clock when the key's expiry was last set), then n slots. A request is
-- admitted when fewer than N admission times lie in the last 60 s, which is exactly "fewer
-- than N admitted in any rolling 60 s".
-- Times only grow (an admission is never counted earlier than the newest one), so the c
-- counted slots are sorted, oldest first, and the ring is a queue: an admission drops the
-- times that left the window from its front (found by galloping from the front, then a
-- binary search: O(log k) probes for k dropped, one probe when none left) and writes one
-- slot at its back. Steady traffic drops about one time an admission, so an admission reads
-- two 512-byte blocks and writes two slots whatever N; after a quiet minute the whole ring
-- goes in O(log N). A changed limit rewrites the ring once, O(N).
-- (The binary search over all c slots this replaced cost ~40 µs an admission at N =
-- 1,000,000 on the benchmark machine, against ~12 µs for the rest of the script's rate part.)

local HEADER = 40

-- The header: n, h, c, the newest time (ms, 0: none), and when the expiry was last set.
-- The last two could be derived (the newest slot; the key's PTTL), each at the price of
-- one more call an admission: kept here, and written by every change of the ring
-- (`window_add`, `window_remove`, `ring_resize`), so that an admission reads the header
-- and one block only.
local function ring_meta(win)
  local s = redis.call('GETRANGE', win, 0, HEADER - 1)
  if #s < HEADER then return 0, 0, 0, 0, 0 end
  local n, h, c, newest, ttl_at = struct.unpack('<ddddd', s)
  return n, h, c, newest, ttl_at
end

local function ring_write_meta(win, n, h, c, newest, ttl_at)
  redis.call('SETRANGE', win, 0, struct.pack('<ddddd', n, h, c, newest, ttl_at))
end

-- Slots are read in blocks of 64 (512 B), each fetched once per script and unpacked in
-- Lua: a ring of up to 64 slots is one read; a binary search over 10,000 slots reads about
-- nine blocks. (Measured: 4 KB blocks cost more than they save; 8-byte reads, 16 a search,
-- cost about the same as 64-slot blocks.)
local BLOCK = 64

-- A reader of the ring's logical slots (0 = oldest of the c counted): `at(i)` is a time.
-- `blocks` (optional): blocks already read, shared by readers of one script.
local function ring_reader(win, n, h, c, blocks)
  blocks = blocks or {}
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

-- How long the key must live from `now_ms` so that every time up to `t` stays while it is
-- in the window, and half a window more: 2 windows, plus how far `t` lies ahead of Redis's
-- clock (only after the clock went back under recorded times).
local function ring_ttl(t, now_ms)
  local ahead = t - now_ms
  if ahead < 0 then ahead = 0 end
  return WINDOW * 2 + ahead
end

-- Rewrites the ring with capacity `capacity`, keeping its newest `keep` times; its expiry
-- set at `now_ms`.
local function ring_resize(win, n, h, c, capacity, keep, now_ms)
  local at = ring_reader(win, n, h, c)
  local newest = 0
  if keep > 0 then newest = at(c - 1) end
  local parts = { struct.pack('<ddddd', capacity, keep % capacity, keep, newest, now_ms) }
  for i = c - keep, c - 1 do
    parts[#parts + 1] = struct.pack('<d', at(i))
  end
  redis.call('SET', win, table.concat(parts), 'PX', ring_ttl(newest, now_ms))
  return capacity, keep % capacity, keep
end

-- The first of the c slots still in the window at `now_us` (c when none is): gallops from
-- the front (1, 2, 4, … slots on) past times that left, then searches between.
local function first_inside(at, c, now_us)
  local function inside(i) return (at(i) + WINDOW) * 1000 > now_us end
  if c == 0 or inside(0) then return 0 end
  local lo, step, hi = 0, 1, c -- at(lo) has left; the answer is in (lo, hi]
  while lo + step < c do
    if inside(lo + step) then
      hi = lo + step
      break
    end
    lo = lo + step
    step = step * 2
  end
  lo = lo + 1
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    if inside(mid) then hi = mid else lo = mid + 1 end
  end
  return lo
end

-- How many admissions lie in the window at `now_us` (at most `limit` counted), and the
-- time (ms, nil when none) of the one whose leaving frees a slot: the oldest in the window,
-- or with `limit` or more in it, the `limit`-th newest. `writable`: the times that left
-- are dropped (written back here when no admission follows to write them).
-- The ring holds every admission still in the window: it grows with a raised limit before
-- admitting, and a lowered limit shrinks it only once no more than `limit` are in the
-- window (so lowering and raising again never forgets one).
local function window_scan(win, limit, now_us, writable)
  local n, h, c, newest, ttl_at = ring_meta(win)
  if c == 0 then return 0, nil end
  local blocks = {}
  local at = ring_reader(win, n, h, c, blocks)
  local left = first_inside(at, c, now_us)
  if left > 0 then
    c = c - left
    at = ring_reader(win, n, h, c, blocks)
  end
  local now_ms = math.floor(now_us / 1000)
  if n < limit and writable then
    n, h, c = ring_resize(win, n, h, c, limit, c, now_ms)
    at = ring_reader(win, n, h, c)
    left, ttl_at = 0, now_ms
  end
  scanned = { n = n, h = h, c = c, at = at, newest = newest, ttl_at = ttl_at }
  local inside = c
  if inside >= limit or inside == 0 then
    if left > 0 and writable then
      ring_write_meta(win, n, h, c, newest, ttl_at)
    end
    if inside == 0 then return 0, nil end
    return limit, at(c - limit)
  end
  local oldest = at(0)
  if n > limit and writable then
    ring_resize(win, n, h, c, limit, inside, now_ms)
    scanned = nil
  end
  return inside, oldest
end

-- Records an admission at `now_us`, counted at the next whole millisecond (never earlier
-- than the newest one); returns its time (ms). `window_scan` has resized the ring.
-- The key's expiry (`ring_ttl`) is pushed back when it was set half a window ago or more
-- by Redis's clock (`ttl_at`), when that clock went back since, or when the time recorded
-- lies ahead of it: so it always lies over 1.5 windows past the newest admission's time.
local function window_add(win, limit, now_us, member)
  local n, h, c, newest, ttl_at
  if scanned then
    n, h, c, newest, ttl_at = scanned.n, scanned.h, scanned.c, scanned.newest, scanned.ttl_at
  else
    n, h, c, newest, ttl_at = ring_meta(win)
  end
  if c == 0 then n, h = limit, 0 end
  local t = math.ceil(now_us / 1000)
  if c > 0 and newest > t then t = newest end
  redis.call('SETRANGE', win, HEADER + h * 8, struct.pack('<d', t))
  h = (h + 1) % n
  if c < n then c = c + 1 end
  local now_ms = math.floor(now_us / 1000)
  local refresh = now_ms - ttl_at >= WINDOW / 2 or now_ms < ttl_at or t > now_ms + 1
  if refresh then ttl_at = now_ms end
  ring_write_meta(win, n, h, c, t, ttl_at)
  if refresh then redis.call('PEXPIRE', win, ring_ttl(t, now_ms)) end
  return t
end

-- Takes back the admission counted at `t`: the newest slot holding `t` goes, the newer
-- ones move down one (a revert follows its admission closely, so that is a few slots).
local function window_remove(win, member, t)
  local n, h, c, newest, ttl_at = ring_meta(win)
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
  if found == c - 1 then
    newest = 0
    if c >= 2 then newest = at(c - 2) end
  end
  ring_write_meta(win, n, (h - 1) % n, c - 1, newest, ttl_at)
end
