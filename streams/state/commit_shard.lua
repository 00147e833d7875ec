-- Apply shards' batches atomically, each only if nobody wrote its shard since it was read.
-- A call carries one shard's part (on Redis Cluster: all its keys share the shard's hash
-- tag, so it runs there too) or every shard of a batch (a standalone Redis: one call,
-- one reply, instead of one of each per shard). Each part is checked and applied on its
-- own: a conflict on one shard leaves the others' parts applied.
--
-- ARGV[1]: the number of parts; then each part as n_keys, n_args, then its n_args
-- arguments; its n_keys keys follow the previous part's in KEYS.
-- A part's keys: meta hash (epoch, watermarks, applied offsets), due zset, outbox
--   stream, KPI hash (streams/state/kpis.py), then its customer keys.
-- A part's arguments: expected_epoch,
--       n_marks, (field, event time) x n_marks   (per-partition watermarks: kept as maxima),
--       n_customers, blob x n_customers (aligned with the customer keys),
--       n_due, (member, score or '' to remove) x n_due,
--       n_offsets, (field, offset) x n_offsets,
--       n_outbox, (topic, key, value) x n_outbox,
--       n_acked, outbox id x n_acked,
--       kpi_cutoff_day or '', n_kpi, (field, delta) x n_kpi
--         (KPI fields 'a:<counter>' all-time and 'd:<day>:<counter>' per day; day fields
--          older than the cutoff are deleted once, when it moves, and never written again)
-- Returns, per part, {1, new_epoch, outbox ids...} or {0, current_epoch} on conflict.

-- ``command`` [key] with ``values`` as its arguments, in chunks that stay far below Lua's
-- limit on unpack()ed arguments (an even size: MSET and ZADD take pairs).
local function bulk(command, key, values)
  local chunk = 2000
  for first = 1, #values, chunk do
    local last = math.min(first + chunk - 1, #values)
    if key then
      redis.call(command, key, unpack(values, first, last))
    else
      redis.call(command, unpack(values, first, last))
    end
  end
end

local function commit(kb, i)
  local meta, due, outbox, kpi = KEYS[kb + 1], KEYS[kb + 2], KEYS[kb + 3], KEYS[kb + 4]
  local epoch = redis.call('HGET', meta, 'epoch') or '0'
  if epoch ~= ARGV[i] then
    return {0, epoch}
  end
  i = i + 1
  local n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    local name, mark = ARGV[i], ARGV[i + 1]; i = i + 2
    local current = redis.call('HGET', meta, name)
    if not current or tonumber(mark) > tonumber(current) then
      redis.call('HSET', meta, name, mark)
    end
  end
  -- The customers' blobs and check times go in a few MSET, ZADD and ZREM calls rather
  -- than one call each: a call from Lua costs Redis more than the write it makes.
  n = tonumber(ARGV[i]); i = i + 1
  local blobs = {}
  for k = 1, n do
    blobs[2 * k - 1], blobs[2 * k] = KEYS[kb + 4 + k], ARGV[i]; i = i + 1
  end
  bulk('MSET', nil, blobs)
  n = tonumber(ARGV[i]); i = i + 1
  local added, removed = {}, {}
  for _ = 1, n do
    local member, score = ARGV[i], ARGV[i + 1]; i = i + 2
    if score == '' then
      removed[#removed + 1] = member
    else
      added[#added + 1] = score
      added[#added + 1] = member
    end
  end
  bulk('ZADD', due, added)
  bulk('ZREM', due, removed)
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
  i = i + n
  local cutoff = tonumber(ARGV[i]); i = i + 1
  n = tonumber(ARGV[i]); i = i + 1
  if n > 0 or cutoff then
    -- One read and one write however many fields (plus, once a day, the pruning), in
    -- chunks that stay far below Lua's limit on unpack()ed arguments.
    local chunk = 1000
    local names, deltas, current = {'lo'}, {0}, {}
    for k = 1, n do
      names[k + 1], deltas[k + 1] = ARGV[i], tonumber(ARGV[i + 1]); i = i + 2
    end
    for first = 1, #names, chunk do
      local last = math.min(first + chunk - 1, #names)
      local got = redis.call('HMGET', kpi, unpack(names, first, last))
      for k = first, last do current[k] = got[k - first + 1] end
    end
    local lo = tonumber(current[1])
    local out = {}
    if cutoff and (not lo or cutoff > lo) then
      if lo then
        local stale = {}
        for _, name in ipairs(redis.call('HKEYS', kpi)) do
          local day = tonumber(string.match(name, '^d:(%-?%d+):'))
          if day and day < cutoff then stale[#stale + 1] = name end
        end
        bulk('HDEL', kpi, stale)
      end
      lo = cutoff
      out[1], out[2] = 'lo', tostring(cutoff)
    end
    for k = 2, #names do
      local day = tonumber(string.match(names[k], '^d:(%-?%d+):'))
      if not (day and lo and day < lo) then
        out[#out + 1] = names[k]
        -- %.17g: a double survives the round trip through its string exactly.
        out[#out + 1] = string.format('%.17g', (tonumber(current[k]) or 0) + deltas[k])
      end
    end
    bulk('HSET', kpi, out)
  end
  local new_epoch = redis.call('HINCRBY', meta, 'epoch', 1)
  local result = {1, tostring(new_epoch)}
  for k = 1, #ids do result[#result + 1] = ids[k] end
  return result
end

local results, kb, i = {}, 0, 2
for part = 1, tonumber(ARGV[1]) do
  local n_keys, n_args = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  results[part] = commit(kb, i + 2)
  kb, i = kb + n_keys, i + 2 + n_args
end
return results
