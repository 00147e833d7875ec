-- Apply one shard's batch atomically, if nobody wrote the shard since it was read.
-- All keys share the shard's hash tag, so this runs on Redis Cluster too.
--
-- KEYS[1] meta hash (epoch, watermarks, applied offsets)   KEYS[2] due zset
-- KEYS[3] outbox stream                                   KEYS[4..] customer keys
-- ARGV: expected_epoch,
--       n_marks, (field, event time) x n_marks   (per-partition watermarks: kept as maxima),
--       n_customers, blob x n_customers (aligned with KEYS[4..]),
--       n_due, (member, score or '' to remove) x n_due,
--       n_offsets, (field, offset) x n_offsets,
--       n_outbox, (topic, key, value) x n_outbox,
--       n_acked, outbox id x n_acked
-- Returns {1, new_epoch, outbox ids...} or {0, current_epoch} on conflict.
local meta, due, outbox = KEYS[1], KEYS[2], KEYS[3]
local epoch = redis.call('HGET', meta, 'epoch') or '0'
if epoch ~= ARGV[1] then
  return {0, epoch}
end
local i = 2
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local name, mark = ARGV[i], ARGV[i + 1]; i = i + 2
  local current = redis.call('HGET', meta, name)
  if not current or tonumber(mark) > tonumber(current) then
    redis.call('HSET', meta, name, mark)
  end
end
n = tonumber(ARGV[i]); i = i + 1
for k = 1, n do
  redis.call('SET', KEYS[3 + k], ARGV[i]); i = i + 1
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local member, score = ARGV[i], ARGV[i + 1]; i = i + 2
  if score == '' then
    redis.call('ZREM', due, member)
  else
    redis.call('ZADD', due, score, member)
  end
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HSET', meta, ARGV[i], ARGV[i + 1]); i = i + 2
end
n = tonumber(ARGV[i]); i = i + 1
local ids = {}
for _ = 1, n do
  ids[#ids + 1] = redis.call('XADD', outbox, '*', 't', ARGV[i], 'k', ARGV[i + 1], 'v', ARGV[i + 2])
  i = i + 3
end
n = tonumber(ARGV[i]); i = i + 1
if n > 0 then
  local acked = {}
  for k = 1, n do acked[k] = ARGV[i + k - 1] end
  redis.call('XDEL', outbox, unpack(acked))
end
local new_epoch = redis.call('HINCRBY', meta, 'epoch', 1)
local result = {1, tostring(new_epoch)}
for k = 1, #ids do result[#result + 1] = ids[k] end
return result
