#!lua
-- recover: put every job whose lease lapsed (its worker died or stalled) back at the front of its
-- queue. Any live worker and `bench schedule` run it every few seconds.
--
-- Key schema (<p> = the bench prefix; names in bench/keys.py):
--   <p>unacked              hash    delivery tag -> message (removed here)
--   <p>inflight             hash    delivery tag -> JSON [owner token, source list, taken at, site, queue,
--                                   message tag or false, 1 if counted in running:<queue> else 0, 1 if
--                                   the message's lease had lapsed before else 0]
--   <p>leases               zset    delivery tag -> lease expiry; the lapsed ones are taken here
--   <p>redeliveries         hash    message tag -> times its lease lapsed (incremented here, under
--                                   the message's own delivery tag, read from it if the take did not;
--                                   max_redeliveries fails a job whose workers keep dying)
--   <p>lapsed_takes         zset    delivery tag -> when it was put back here (a late finish of the
--                                   take is stale, not lost; while any is there, fetches read the
--                                   lapses of the messages they take); older than a day: dropped here
--   <p>pending:<queue>      hash    site -> waiting jobs (incremented here)
--   <p>wake:<queue>         list    one token pushed per job put back
--   <p>recovered:<queue>    hash    site -> jobs put back after their worker died (incremented here)
--   <p>sites:<queue>        zset    the job's site rejoins the turns (ZADD NX 0: served next)
--   <p>running:<queue>      hash    site -> running jobs of a capped site (decremented here)
--   the job's source list (from inflight): the message is pushed back on its front (RPUSH)
--
-- KEYS[1] unacked, KEYS[2] inflight, KEYS[3] leases, KEYS[4] redeliveries, KEYS[5] lapsed_takes
-- ARGV[1] batch size, ARGV[2] pending-counts prefix (<p>pending:), ARGV[3] wake prefix
--   (<p>wake:), ARGV[4] recovered prefix (<p>recovered:), ARGV[5] sites prefix
--   (<p>sites:), ARGV[6] running prefix (<p>running:)
-- Refused as a whole under maxmemory (noeviction), before it moves anything (#!lua, no allow-oom).
-- Returns the delivery tags put back (at most ARGV[1]; the caller repeats while the batch is full).
--#include _now
--#include _describe

local tags = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
local RUNNING, WAKE = ARGV[6], ARGV[3]
for _, tag in ipairs(tags) do
  local item = redis.call('HGET', KEYS[1], tag)
  local raw = redis.call('HGET', KEYS[2], tag)
  redis.call('HDEL', KEYS[1], tag)
  redis.call('HDEL', KEYS[2], tag)
  redis.call('ZREM', KEYS[3], tag)
  if item and raw then
    local meta = cjson.decode(raw)
    redis.call('RPUSH', meta[2], item)
    redis.call('HINCRBY', ARGV[2] .. meta[5], meta[4], 1)
    redis.call('LPUSH', ARGV[3] .. meta[5], '')
    local own = meta[6]  -- false: the take did not read the message's own tag
    if not own then own = describe(item) or tag end
    redis.call('HINCRBY', KEYS[4], own, 1)
    redis.call('HINCRBY', ARGV[4] .. meta[5], meta[4], 1)
    redis.call('ZADD', ARGV[5] .. meta[5], 'NX', 0, meta[4])
    --#include _uncount
    table.insert(out, tag)
  end
  redis.call('ZADD', KEYS[5], now, tag)
end
redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - 86400)
return out
