-- unschedule: take one delayed job out of the delayed set (cancel, give up), unless a mover
-- took it first.
--
-- Key schema: <p>delayed, <p>delayed:data, <p>delayed:ids as in promote.lua;
--   <p>scheduled:<queue> (decremented), <p>retrying:<queue> (decremented for a retry), the
--   entry's status key (deleted)
--
-- KEYS[1] delayed, KEYS[2] delayed:data, KEYS[3] delayed:ids
-- ARGV[1] entry id, ARGV[2] scheduled prefix (<p>scheduled:), ARGV[3] retrying prefix (<p>retrying:)
-- Returns the entry's JSON, or false when it was no longer delayed.

if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return false end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if not raw then return false end
local e = cjson.decode(raw)
redis.call('HINCRBY', ARGV[2] .. e[2], e[3], -1)
if e[5] == 'retry' and ARGV[3] then redis.call('HINCRBY', ARGV[3] .. e[2], e[3], -1) end
if redis.call('HGET', KEYS[3], e[4]) == ARGV[1] then redis.call('HDEL', KEYS[3], e[4]) end
if e[7] ~= '' then redis.call('DEL', e[7]) end
return raw
