#!lua flags=allow-oom
-- ack: forget a finished job, only while the caller's owner token still owns it. A worker that
-- was stalled past its lease (its job recovered, perhaps taken by another worker) cannot remove
-- the new holder's job: its late finish is counted in stale_acks instead. A finish of a take Redis
-- has no record of, and no lapse of, is counted in lost_acks (Redis restarted without its data,
-- or the job was put back and already finished elsewhere). Runs under maxmemory too (allow-oom):
-- it frees memory.
--
-- Key schema (<p> = the bench prefix; names in bench/keys.py):
--   <p>unacked        hash    delivery tag -> message
--   <p>inflight       hash    delivery tag -> JSON [owner token, source list, taken at, site, queue,
--                             message tag or false, 1 if counted in running:<queue> else 0, 1 if the
--                             message's lease had lapsed before else 0 (absent in old entries)]
--   <p>leases         zset    delivery tag -> lease expiry
--   <p>redeliveries   hash    message tag -> times its lease lapsed (dropped here when it had lapsed)
--   <p>stale_acks     string  finishes reported by a worker whose lease had lapsed
--   <p>lost_acks      string  finishes of takes Redis had no record of
--   <p>lapsed_takes   zset    takes put back by recover (a finish of one is stale, not lost)
--   <p>running:<queue> hash   site -> running jobs of a capped site (decremented here)
--   <p>wake:<queue>   list    a token when a capped site's job finished (its next may start)
--
-- KEYS[1] unacked, KEYS[2] inflight, KEYS[3] leases, KEYS[4] redeliveries, KEYS[5] stale_acks,
--   KEYS[6] lost_acks, KEYS[7] lapsed_takes
-- ARGV[1] delivery tag, ARGV[2] owner token, ARGV[3] running prefix (<p>running:),
--   ARGV[4] wake prefix (<p>wake:)
-- Returns 1 when done, -1 when the token no longer owns the job (stale_acks incremented), -2 when
-- Redis has no record of it (lost_acks incremented). The body is the snippet _ack, which fetch
-- includes too: a busy worker's acks ride in its next fetch; this script is the path of the acks
-- that cannot (an idle or closing worker, a fetch Redis refused).

local STALE_ACKS, LOST_ACKS, LAPSED_TAKES = KEYS[5], KEYS[6], KEYS[7]
local RUNNING, WAKE = ARGV[3], ARGV[4]
--#include _ack
return ack_one(ARGV[1], ARGV[2])
