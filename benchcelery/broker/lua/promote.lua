#!lua
-- promote: move the delayed jobs that are due (run-later jobs, retries waiting for their next
-- attempt) to their queues, in one step: no moment at which a due job is in neither place, and
-- two movers racing cannot both move one (the second finds it gone). Any live worker and
-- `bench schedule` run it (broker/delayed.py: when the earliest due time comes, and every few
-- seconds). Its cost is O(due jobs), not O(delayed jobs): ZRANGEBYSCORE with LIMIT.
--
-- Key schema (<p> = the bench prefix; names in bench/keys.py):
--   <p>delayed              zset    entry id -> due time (epoch s, Redis's clock)
--   <p>delayed:data         hash    entry id -> JSON [list, queue, site, job id, kind, message, status key]
--   <p>delayed:ids          hash    job id -> entry id
--   <p>pending:<queue>      hash    site -> waiting jobs (incremented here, as a push does)
--   <p>scheduled:<queue>    hash    site -> delayed jobs (decremented here)
--   <p>retrying:<queue>     hash    site -> retries waiting among them (decremented for a retry)
--   <p>wake:<queue>         list    wake tokens for idle workers (at most 64 per queue and call)
--   <p>sites:<queue>        zset    the entry's site joins the turns (ZADD NX 0, as a push does)
--   <p>q:<queue>:<site>[\x06\x16<n>]   the site's list of the entry's priority bucket: the message
--                                   is pushed on it exactly as enqueue would have pushed it (LPUSH).
--                                   The bucket is the suffix of the entry's list; an entry written
--                                   by an earlier version names kombu's one-list layout there and
--                                   goes to its site's list all the same.
--
-- KEYS[1] delayed, KEYS[2] delayed:data, KEYS[3] delayed:ids
-- ARGV[1] batch size, ARGV[2] pending prefix (<p>pending:), ARGV[3] wake prefix (<p>wake:),
--   ARGV[4] scheduled prefix (<p>scheduled:), ARGV[5] retrying prefix (<p>retrying:), ARGV[6] the
--   bench prefix, ARGV[7] sites prefix (<p>sites:)
-- Refused as a whole under maxmemory (noeviction), before it moves anything (#!lua, no allow-oom).
-- Returns {jobs moved, the earliest due time left (string) or false, Redis's now (string)}.
--#include _now

local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local wakes = {}
local moved = 0
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  if raw then
    local e = cjson.decode(raw)
    local site = (type(e[3]) == 'string' and e[3] ~= '') and e[3] or '?'
    local bucket = string.match(e[1], '\6\22%d+$') or ''
    redis.call('LPUSH', ARGV[6] .. 'q:' .. e[2] .. ':' .. site .. bucket, e[6])
    redis.call('ZADD', ARGV[7] .. e[2], 'NX', 0, site)
    redis.call('HINCRBY', ARGV[2] .. e[2], site, 1)
    redis.call('HINCRBY', ARGV[4] .. e[2], e[3], -1)
    if e[5] == 'retry' then redis.call('HINCRBY', ARGV[5] .. e[2], e[3], -1) end
    if redis.call('HGET', KEYS[3], e[4]) == id then redis.call('HDEL', KEYS[3], e[4]) end
    if e[7] ~= '' and redis.call('EXISTS', e[7]) == 1 then redis.call('SET', e[7], 'queued', 'KEEPTTL') end
    wakes[e[2]] = (wakes[e[2]] or 0) + 1
    moved = moved + 1
  end
end
for queue, n in pairs(wakes) do
  local tokens = {}
  for i = 1, math.min(n, 64) do tokens[i] = '' end
  redis.call('LPUSH', ARGV[3] .. queue, unpack(tokens))
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {moved, nxt[2] or false, tostring(now)}
