#!lua
-- fetch: take the next job of the given queues and park it in flight, in one step (no moment at
-- which a popped message is held only by a client).
--
-- Key schema (<p> = the bench prefix, bc:<bench_id>:; names in bench/keys.py):
--   <p>unacked            hash    delivery tag -> the message exactly as it waited
--   <p>inflight           hash    delivery tag -> JSON [owner token, source list, taken at, site, queue,
--                                 message tag]
--   <p>leases             zset    delivery tag -> lease expiry (epoch s, Redis's clock)
--   <p>redeliveries       hash    message tag -> times its lease lapsed before
--   <p>pending:<queue>    hash    site -> waiting jobs of the queue (decremented here)
--   <p>wake:<queue>       list    wake tokens of idle workers (cleared here when the queue is empty)
--   <p><queue>, <p><queue>\x06\x16<n>   lists   waiting messages, one per priority bucket
--
-- KEYS[1] unacked, KEYS[2] inflight, KEYS[3] leases, KEYS[4] redeliveries, then for each queue
--   (in ARGV's order): pending:<queue>, wake:<queue>, its lists in the order they are served;
--   last, <p>paused (set of paused queue names).
-- ARGV[1] owner token, ARGV[2] lease (seconds), ARGV[3..] queue names.
--
-- Priority buckets come first (bucket s of every queue, then bucket s + 1), then the queues'
-- order. The job keeps its message's delivery tag unless that is missing, already in flight, or
-- the job was put back after its lease lapsed (its first run may still be going on a stalled
-- worker, perhaps in this very process): then the owner token is its delivery tag, a fresh
-- identity no other run's ack can match. Lapses are counted under the message's own tag.
-- Under maxmemory (noeviction) Redis refuses the whole script before it runs (#!lua, no
-- allow-oom): nothing is taken that could not be parked.
-- Returns false when every queue is empty, else {queue, delivery tag, message, earlier lapses}.
--#include _now

-- Paused queues (bench queue pause): the last key is <p>paused, the set of paused queue names;
-- a paused queue is skipped (its jobs wait, still counted) and its wake tokens are cleared.
local paused = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[#KEYS])) do paused[name] = true end

local nq = #ARGV - 2
local steps = (#KEYS - 5) / nq - 2
for s = 1, steps do
  for q = 1, nq do
    local base = 4 + (q - 1) * (steps + 2)
    local list = KEYS[base + 2 + s]
    local item = (not paused[ARGV[2 + q]]) and redis.call('RPOP', list)
    if item then
      local tag, site = nil, '?'
      local ok, msg = pcall(cjson.decode, item)
      if ok and type(msg) == 'table' then
        if type(msg['properties']) == 'table' and type(msg['properties']['delivery_tag']) == 'string' then
          tag = msg['properties']['delivery_tag']
        end
        if type(msg['headers']) == 'table' and type(msg['headers']['site']) == 'string' then
          site = msg['headers']['site']
        end
      end
      local lapses = 0
      if tag then lapses = tonumber(redis.call('HGET', KEYS[4], tag) or 0) end
      local own = tag or ARGV[1]
      if not tag or lapses > 0 or redis.call('HEXISTS', KEYS[1], tag) == 1 then tag = ARGV[1] end
      redis.call('HSET', KEYS[1], tag, item)
      redis.call('HSET', KEYS[2], tag, cjson.encode({ARGV[1], list, now, site, ARGV[2 + q], own}))
      redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), tag)
      redis.call('HINCRBY', KEYS[base + 1], site, -1)
      return {ARGV[2 + q], tag, item, lapses}
    end
  end
end
for q = 1, nq do redis.call('DEL', KEYS[4 + (q - 1) * (steps + 2) + 2]) end
return false
