-- Snippet: `forget(tag)` drops delivery tag `tag` from unacked (KEYS[1]), inflight (KEYS[2]) and
-- leases (KEYS[3]). Included by _ack (so by ack and fetch), restore and ack_retry.

local function forget(tag)
  redis.call('HDEL', KEYS[1], tag)
  redis.call('HDEL', KEYS[2], tag)
  redis.call('ZREM', KEYS[3], tag)
end
