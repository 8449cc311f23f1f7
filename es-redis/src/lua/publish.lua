-- Publishes a chunk of the global log, exactly once and in position order.
--
-- KEYS[1]    the guard: the all-events stream (layouts `all` and `both`) or the head key
--            (layout `per-type`), whose value is the last published position
-- KEYS[2..]  the per-type streams this chunk writes to (layouts `per-type` and `both`)
-- ARGV[1]    layout: 'all', 'per-type' or 'both'
-- ARGV[2]    MAXLEN ~ bound for every stream, or '' for none
-- ARGV[3]    PUBLISH channel prefix, or '' for no PUBLISH
-- ARGV[4]    position of the event published before this chunk's first (0: none)
-- ARGV[5]    F, the number of entry fields per event
-- ARGV[6 .. 5+F]  the field names
-- then per event: position, index of its per-type stream in KEYS (0: none), the PUBLISH
-- message ('' when not published), the aggregate type, then F field values.
--
-- An event at or below the stream's last id is already published and skipped. An event above
-- it is written only when the event before it is the stream's last one: otherwise the
-- broker holds something the relay did not expect (lost data, another writer), and the
-- script refuses with ESGAP before writing anything more, so a gap can never open.
-- Positions are compared as decimal strings (exact up to 2^64; Lua numbers are doubles).
-- Returns { events written, last published position }.

local function below_or_equal(a, b)
  if #a ~= #b then return #a < #b end
  return a <= b
end

local layout = ARGV[1]
local guard = KEYS[1]

local function last_published()
  if layout == 'per-type' then
    return redis.call('GET', guard) or '0'
  end
  if redis.call('EXISTS', guard) == 0 then return '0' end
  local info = redis.call('XINFO', 'STREAM', guard)
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      return string.match(info[i + 1], '^(%d+)')
    end
  end
  return redis.error_reply('ESTREAM cannot read the last id of ' .. guard)
end

local last = last_published()
if type(last) == 'table' then return last end

local maxlen = ARGV[2]
local channel = ARGV[3]
local prev = ARGV[4]
local nfields = tonumber(ARGV[5])
local names = {}
for f = 1, nfields do names[f] = ARGV[5 + f] end

-- One argument table for every XADD, filled in place: {key, [MAXLEN ~ n,] id, name, value, ...}.
local args = { '' }
if maxlen ~= '' then
  args[2] = 'MAXLEN'
  args[3] = '~'
  args[4] = maxlen
end
local id_slot = #args + 1
for f = 1, nfields do
  args[id_slot + 2 * f - 1] = names[f]
end

local function xadd(key, id, base)
  args[1] = key
  args[id_slot] = id
  for f = 1, nfields do
    args[id_slot + 2 * f] = ARGV[base + f]
  end
  return redis.pcall('XADD', unpack(args))
end

-- A per-type stream already past this id (written before its head key was lost, or by
-- someone else) holds the event: skip it there. Any other refusal stops the chunk.
local function refused(reply, tolerate_smaller)
  if type(reply) == 'table' and reply.err then
    if tolerate_smaller and string.find(reply.err, 'equal or smaller', 1, true) then
      return false
    end
    return true
  end
  return false
end

local written = 0
local function stop(reply)
  if layout == 'per-type' and written > 0 then redis.call('SET', guard, last) end
  return reply
end

local i = 6 + nfields
while i <= #ARGV do
  local position = ARGV[i]
  local key_index = tonumber(ARGV[i + 1])
  local message = ARGV[i + 2]
  local aggregate_type = ARGV[i + 3]
  local base = i + 3
  if not below_or_equal(position, last) then
    if prev ~= last then
      return stop(redis.error_reply('ESGAP the broker is at position ' .. last ..
        ' but the event before position ' .. position .. ' is ' .. prev))
    end
    local id = position .. '-0'
    if layout ~= 'per-type' then
      local reply = xadd(guard, id, base)
      if refused(reply, false) then return stop(reply) end
    end
    if key_index > 0 then
      local reply = xadd(KEYS[key_index], id, base)
      if refused(reply, true) then return stop(reply) end
    end
    if channel ~= '' then redis.call('PUBLISH', channel .. aggregate_type, message) end
    last = position
    written = written + 1
  end
  prev = position
  i = base + nfields + 1
end
if layout == 'per-type' and written > 0 then
  redis.call('SET', guard, last)
end
return { written, last }
