-- Shared by every script of the limits engine (prepended by scripts.rs): Redis's clock,
-- exact integer formatting, UTC periods and the ledger's period roll. Every stored amount
-- is an integer number of nano-dollars below 2^53 (the Rust side saturates larger ones), so
-- Lua's doubles hold it exactly.

local DAY = 86400000
local WINDOW = 60000
-- The largest amount the engine stores (2^53 - 1 nd, about $9M): sums saturate there.
local MAX = 9007199254740991

-- An integer as Redis reads one: `tostring` would give `1e+15` past 14 digits.
local function int(n)
  return string.format('%d', n)
end

-- Redis's clock in microseconds, moved by `offset_ms` (0 outside the engine's own tests).
local function clock_us(offset_ms)
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2]) + offset_ms * 1000
end

local function num(v, default)
  if v == false or v == nil then return default end
  return tonumber(v)
end

-- Howard Hinnant's civil calendar algorithms (days since 1970-01-01, proleptic Gregorian).
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local mp = (m + 9) % 12
  local doy = math.floor((153 * mp + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function civil_from_days(z)
  z = z + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local y = yoe + era * 400
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  if m <= 2 then y = y + 1 end
  return y, m
end

-- The UTC period of `kind` ('d' daily, 'w' weekly from Monday, 'm' monthly) around `now`
-- (ms): its start and its end (the next reset), in ms. `nil, nil` for 'n' (no reset).
local function period(kind, now)
  local days = math.floor(now / DAY)
  if kind == 'd' then
    return days * DAY, (days + 1) * DAY
  elseif kind == 'w' then
    -- 1970-01-01 was a Thursday: day 0 is weekday 3 counted from Monday.
    local start = days - (days + 3) % 7
    return start * DAY, (start + 7) * DAY
  elseif kind == 'm' then
    local y, m = civil_from_days(days)
    local ny, nm = y, m + 1
    if nm > 12 then ny, nm = y + 1, 1 end
    return days_from_civil(y, m, 1) * DAY, days_from_civil(ny, nm, 1) * DAY
  end
  return nil, nil
end

-- Rolls the ledger `led` to `now` under the reset `kind`, as the memory ledger's
-- `SpendState::roll` does: a period that ended starts again at zero; a change of reset
-- carries the spend of a period still running (the key service recounts it).
local function roll(led, kind, now)
  local stored = redis.call('HGET', led, 'kind')
  if stored == false then stored = 'n' end
  if kind == 'n' then
    if stored ~= 'n' then
      redis.call('HSET', led, 'kind', 'n', 'ps', '-1')
    end
    return
  end
  local ended = false
  if stored ~= 'n' then
    local current = period(stored, now)
    ended = num(redis.call('HGET', led, 'ps'), -1) < current
  end
  if ended then
    redis.call('HSET', led, 'spent', '0')
  end
  if ended or stored ~= kind then
    local start = period(kind, now)
    redis.call('HSET', led, 'kind', kind, 'ps', int(start))
  end
end

-- `roll` from the ledger's fields as already read (`stored` kind or false, `ps`, `spent`):
-- the same writes, and the spent amount after it, without reading them again.
local function roll_read(led, kind, now, stored, ps, spent)
  if stored == false or stored == nil then stored = 'n' end
  spent = num(spent, 0)
  if kind == 'n' then
    if stored ~= 'n' then
      redis.call('HSET', led, 'kind', 'n', 'ps', '-1')
    end
    return spent
  end
  local ended = false
  if stored ~= 'n' then
    local current = period(stored, now)
    ended = num(ps, -1) < current
  end
  if ended then
    redis.call('HSET', led, 'spent', '0')
    spent = 0
  end
  if ended or stored ~= kind then
    local start = period(kind, now)
    redis.call('HSET', led, 'kind', kind, 'ps', int(start))
  end
  return spent
end

-- `add_saturating` of a field whose value was already read (`current`).
local function add_saturating_read(hash, field, current, amount)
  current = num(current, 0)
  local delta = amount
  if amount > 0 and amount > MAX - current then delta = MAX - current end
  if amount < 0 and -amount > current then delta = -current end
  if delta ~= 0 then redis.call('HINCRBY', hash, field, int(delta)) end
  return current + delta
end

-- Adds `amount` to the integer field `field` of `hash`, never past MAX nor below zero.
local function add_saturating(hash, field, amount)
  local current = num(redis.call('HGET', hash, field), 0)
  local delta = amount
  if amount > 0 and amount > MAX - current then delta = MAX - current end
  if amount < 0 and -amount > current then delta = -current end
  if delta ~= 0 then redis.call('HINCRBY', hash, field, int(delta)) end
end

-- Milliseconds until an admission counted at `t` (ms) leaves the window, seen at `now_us`.
local function leaves_in(t, now_us)
  local us = (t + WINDOW) * 1000 - now_us
  if us <= 0 then return 0 end
  return math.ceil(us / 1000)
end

-- A settled, reverted or swept hold is remembered this long (ms): a few leases, at least
-- ten minutes, so a retried settle or admission is recognised.
local function done_ttl(lease)
  local ttl = lease * 4
  if ttl < 600000 then ttl = 600000 end
  return int(ttl)
end
