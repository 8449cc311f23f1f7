-- Moves consumer group ARGV[1] of stream KEYS[1] to id ARGV[2] (its last-delivered id),
-- creating the group (and the stream, empty) if needed.
local created = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], ARGV[2], 'MKSTREAM')
if type(created) == 'table' and created.err then
  if string.find(created.err, 'BUSYGROUP', 1, true) then
    return redis.call('XGROUP', 'SETID', KEYS[1], ARGV[1], ARGV[2])
  end
  return created
end
return created
