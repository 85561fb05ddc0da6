-- delay: put a job in the delayed set to run later (enqueue_in / enqueue_at). Due times are
-- Redis's clock, so a job enqueued `in` some seconds from a host with a skewed clock is not early.
--
-- Key schema: <p>delayed, <p>delayed:data, <p>delayed:ids, <p>scheduled:<queue> as in promote.lua;
--   <p>delayed:due (channel): the due time is published (movers wake for it)
--
-- KEYS[1] delayed, KEYS[2] delayed:data, KEYS[3] delayed:ids, KEYS[4] scheduled:<queue>
-- ARGV[1] entry id, ARGV[2] entry JSON, ARGV[3] job id, ARGV[4] site, ARGV[5] due (epoch s;
--   '' = ARGV[6] seconds from now), ARGV[6] seconds, ARGV[7] channel, ARGV[8] status key
--   ('' = untracked), ARGV[9] status, ARGV[10] status expiry (s)
-- Returns the due time (string).
--#include _now

local due = tonumber(ARGV[5]) or (now + tonumber(ARGV[6]))
redis.call('ZADD', KEYS[1], due, ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
if ARGV[8] ~= '' then redis.call('SET', ARGV[8], ARGV[9], 'EX', ARGV[10]) end
redis.call('PUBLISH', ARGV[7], tostring(due))
return tostring(due)
