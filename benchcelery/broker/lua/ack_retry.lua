-- ack_retry: finish a failed job that has attempts left by scheduling its next attempt, in one
-- step with the ack: the job leaves flight and enters the delayed set together, so a worker that
-- dies right after cannot lose the retry. Fenced by the owner token like ack: a worker whose lease
-- had lapsed (the job went back to its queue) changes nothing and counts in stale_acks.
--
-- Key schema (<p> = the bench prefix; names in bench/keys.py):
--   <p>unacked, <p>inflight, <p>leases, <p>redeliveries, <p>stale_acks    as in ack.lua
--   <p>delayed              zset    entry id -> due time (added here)
--   <p>delayed:data         hash    entry id -> JSON entry (promote.lua), message with its attempts
--   <p>delayed:ids          hash    job id -> entry id
--   <p>scheduled:<queue>    hash    site -> delayed jobs (incremented here)
--   <p>retrying:<queue>     hash    site -> retries waiting among them (incremented here)
--   <p>delayed:due          chan    the new due time is published (movers wake for it)
--   <p>running:<queue>      hash    site -> running jobs of a capped site (decremented here)
--   <p>wake:<queue>         list    a token when a capped site's job finished (its next may start)
--
-- KEYS[1] unacked, KEYS[2] inflight, KEYS[3] leases, KEYS[4] redeliveries, KEYS[5] stale_acks,
--   KEYS[6] delayed, KEYS[7] delayed:data, KEYS[8] delayed:ids, KEYS[9] scheduled:<queue>,
--   KEYS[10] retrying:<queue>
-- ARGV[1] delivery tag, ARGV[2] owner token, ARGV[3] delay (s), ARGV[4] entry id, ARGV[5] entry
--   JSON, ARGV[6] job id, ARGV[7] site, ARGV[8] channel, ARGV[9] status key ('' = untracked),
--   ARGV[10] status, ARGV[11] status expiry (s), ARGV[12] running prefix (<p>running:), ARGV[13]
--   wake prefix (<p>wake:)
-- Returns 1 when done, -1 when the token no longer owns the job (stale_acks incremented).
--#include _now

local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then redis.call('INCR', KEYS[5]) return -1 end
local meta = cjson.decode(raw)
if meta[1] ~= ARGV[2] then redis.call('INCR', KEYS[5]) return -1 end
--#include _forget
forget(ARGV[1])
local RUNNING, WAKE = ARGV[12], ARGV[13]
--#include _uncount
redis.call('HDEL', KEYS[4], meta[6] or ARGV[1])  -- lapses are counted under the message's tag
local due = now + tonumber(ARGV[3])
redis.call('ZADD', KEYS[6], due, ARGV[4])
redis.call('HSET', KEYS[7], ARGV[4], ARGV[5])
redis.call('HSET', KEYS[8], ARGV[6], ARGV[4])
redis.call('HINCRBY', KEYS[9], ARGV[7], 1)
redis.call('HINCRBY', KEYS[10], ARGV[7], 1)
if ARGV[9] ~= '' then redis.call('SET', ARGV[9], ARGV[10], 'EX', ARGV[11]) end
redis.call('PUBLISH', ARGV[8], tostring(due))
return 1
