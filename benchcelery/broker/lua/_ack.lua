-- Snippet: `ack_one(tag, token)`, the fenced ack of one finished job (see ack.lua): 1 when done,
-- -1 when the token no longer owns the job (counted in STALE_ACKS), -2 when Redis has no record of
-- the take (counted in LOST_ACKS). Expects KEYS[1] unacked, KEYS[2] inflight, KEYS[3] leases,
-- KEYS[4] redeliveries and the locals STALE_ACKS, LOST_ACKS, LAPSED_TAKES (key names), RUNNING,
-- WAKE (prefixes, for _uncount). A take recover put back is in LAPSED_TAKES for a day; an entry
-- written before that key existed was keyed by the message's own tag, whose lapse is in KEYS[4].
-- The message's lapses are forgotten only when the take recorded some (inflight element 8; an
-- entry written before it existed has none: forgotten as before). Included by ack and fetch (a
-- busy worker's acks ride in its next fetch).

--#include _forget

local function ack_one(tag, token)
  local raw = redis.call('HGET', KEYS[2], tag)
  if not raw then
    if redis.call('ZSCORE', LAPSED_TAKES, tag) or redis.call('HEXISTS', KEYS[4], tag) == 1 then
      redis.call('INCR', STALE_ACKS)
      return -1
    end
    redis.call('INCR', LOST_ACKS)
    return -2
  end
  local meta = cjson.decode(raw)
  if meta[1] ~= token then redis.call('INCR', STALE_ACKS) return -1 end
  forget(tag)
  --#include _uncount
  if meta[8] ~= 0 then redis.call('HDEL', KEYS[4], meta[6] or tag) end
  return 1
end
