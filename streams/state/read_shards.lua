-- Read a batch's shards on a standalone Redis in one call and one reply (StateStore.read_stored;
-- a cluster, or a proxy routing by key, gets the same commands pipelined, one per slot).
--
-- ARGV[1]: the number of shards n. KEYS[1..n]: their meta hashes; KEYS[n+1..]: customer keys.
-- Returns {meta 1 as HGETALL gives it, ..., meta n, customer blobs (nil where none)}.
local n = tonumber(ARGV[1])
local out = {}
for s = 1, n do
  out[s] = redis.call('HGETALL', KEYS[s])
end
local blobs = {}
-- MGET in chunks: unpack() has a limit on the values it returns.
local chunk = 1000
for first = n + 1, #KEYS, chunk do
  local got = redis.call('MGET', unpack(KEYS, first, math.min(first + chunk - 1, #KEYS)))
  for k = 1, #got do blobs[#blobs + 1] = got[k] end
end
out[n + 1] = blobs
return out
