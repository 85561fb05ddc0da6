#!lua
-- adopt: move the messages waiting in kombu's per-queue lists (pushed by another tool, or left by
-- the one-list layout of an earlier version) into their sites' lists, keeping their order and
-- priority bucket; each element moves inside this one script, so none is lost or doubled.
--
-- Key schema (<p> = the bench prefix; names in bench/keys.py):
--   <p><queue>, <p><queue>\x06\x16<n>   lists   kombu's buckets (emptied here)
--   <p>q:<queue>:<site>[\x06\x16<n>]   lists   the sites' buckets (filled at their front: the
--                                               moved messages are older than what waits there)
--   <p>sites:<queue>      zset    the sites with waiting jobs (a moved message's site joins)
--   <p>wake:<queue>       list    one token when anything moved
--
-- KEYS[1..4] kombu's lists of the queue (buckets 0, 3, 6, 9), KEYS[5] sites, KEYS[6] wake
-- ARGV[1] the bench prefix, ARGV[2] the queue, ARGV[3] most messages to move
-- Refused as a whole under maxmemory (noeviction), before it moves anything (#!lua, no allow-oom):
-- a script cut after its LPOP would lose the message.
-- Returns the number moved (the caller repeats while it equals ARGV[3]). The pending counters are
-- untouched: the jobs still wait in the same queue.

local SEP = '\6\22'
local STEPS = {'', SEP .. '3', SEP .. '6', SEP .. '9'}
local most = tonumber(ARGV[3])
local moved = 0
for k = 1, 4 do
  while moved < most do
    local item = redis.call('LPOP', KEYS[k])  -- newest first: each lands in front of the newer ones
    if not item then break end
    local site = '?'
    local ok, msg = pcall(cjson.decode, item)
    if ok and type(msg) == 'table' and type(msg['headers']) == 'table' and type(msg['headers']['site']) == 'string'
      and msg['headers']['site'] ~= '' then
      site = msg['headers']['site']
    end
    redis.call('RPUSH', ARGV[1] .. 'q:' .. ARGV[2] .. ':' .. site .. STEPS[k], item)
    redis.call('ZADD', KEYS[5], 'NX', 0, site)
    moved = moved + 1
  end
end
if moved > 0 then redis.call('LPUSH', KEYS[6], '') end
return moved
