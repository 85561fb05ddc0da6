-- Snippet: a job counted against its site's cap (meta[7] == 1) stops counting, and an idle worker
-- is woken (the site may take its next turn). Expects `meta` (the inflight entry), `RUNNING` (the
-- running-counts prefix, <p>running:) and `WAKE` (the wake prefix, <p>wake:). Included by _ack,
-- restore and recover.

if meta[7] == 1 then
  local counts = RUNNING .. meta[5]
  if redis.call('HINCRBY', counts, meta[4], -1) <= 0 then redis.call('HDEL', counts, meta[4]) end
  redis.call('LPUSH', WAKE .. meta[5], '')
end
