#!lua flags=allow-oom
-- restore: put a job back where it waited, only while the caller's owner token still owns it
-- (a prefetched job that will not run here, a message requeued by a reject).
--
-- Key schema (<p> = the bench prefix; names in bench/keys.py):
--   <p>unacked            hash    delivery tag -> message
--   <p>inflight           hash    delivery tag -> JSON [owner token, source list, taken at, site, queue,
--                                 message tag or false, 1 if counted in running:<queue> else 0, 1 if
--                                 the message's lease had lapsed before else 0]
--   <p>leases             zset    delivery tag -> lease expiry
--   <p>pending:<queue>    hash    site -> waiting jobs of the queue (incremented here)
--   <p>wake:<queue>       list    one token pushed here, so an idle worker takes the job
--   <p>sites:<queue>      zset    the job's site rejoins the turns (ZADD NX 0: served next)
--   <p>running:<queue>    hash    site -> running jobs of a capped site (decremented here)
--   the job's source list (from inflight): the message is pushed back on it (its site's list)
--
-- KEYS[1] unacked, KEYS[2] inflight, KEYS[3] leases
-- ARGV[1] delivery tag, ARGV[2] owner token, ARGV[3] '1' = front of the queue (taken next) /
--   '0' = back, ARGV[4] the pending-counts prefix (<p>pending:), ARGV[5] the wake prefix (<p>wake:),
--   ARGV[6] the sites prefix (<p>sites:), ARGV[7] the running prefix (<p>running:)
-- Returns 1 when done, -1 when the token no longer owns the job.
--#include _owned

local item = redis.call('HGET', KEYS[1], ARGV[1])
--#include _forget
forget(ARGV[1])

if item then
  if ARGV[3] == '1' then redis.call('RPUSH', meta[2], item) else redis.call('LPUSH', meta[2], item) end
  redis.call('HINCRBY', ARGV[4] .. meta[5], meta[4], 1)
  redis.call('LPUSH', ARGV[5] .. meta[5], '')
  redis.call('ZADD', ARGV[6] .. meta[5], 'NX', 0, meta[4])
end
local RUNNING, WAKE = ARGV[7], ARGV[5]
--#include _uncount
return 1
