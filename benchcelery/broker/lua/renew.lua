#!lua flags=allow-oom
-- renew: extend the leases of the jobs a live worker holds, for those tags its tokens still own.
--
-- Key schema (<p> = the bench prefix; names in bench/keys.py):
--   <p>leases     zset    delivery tag -> lease expiry (epoch s, Redis's clock); only existing
--                         members are updated (ZADD XX)
--   <p>inflight   hash    delivery tag -> JSON [owner token, ...], read to check ownership
--
-- KEYS[1] leases, KEYS[2] inflight
-- ARGV[1] lease (seconds), then pairs ARGV[2i] delivery tag, ARGV[2i + 1] owner token
-- Returns the tags that are no longer ours (recovered after a lapse, perhaps taken by another worker).
--#include _now

local lost = {}
for i = 2, #ARGV, 2 do
  local raw = redis.call('HGET', KEYS[2], ARGV[i])
  if raw and cjson.decode(raw)[1] == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
  else
    table.insert(lost, ARGV[i])
  end
end
return lost
