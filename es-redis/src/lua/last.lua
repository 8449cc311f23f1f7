-- The last published position: the stream's last generated id (layouts `all` and `both`;
-- it stays when entries are trimmed or deleted, and XADD refuses any id not above it), or
-- the head key's value (layout `per-type`). Returns it as a decimal string ('0': nothing).
--
-- KEYS[1]  the all-events stream or the head key
-- ARGV[1]  'stream' or 'head'
if ARGV[1] == 'head' then
  return redis.call('GET', KEYS[1]) or '0'
end
if redis.call('EXISTS', KEYS[1]) == 0 then return '0' end
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then
    return string.match(info[i + 1], '^(%d+)')
  end
end
return redis.error_reply('ESTREAM cannot read the last id of ' .. KEYS[1])
