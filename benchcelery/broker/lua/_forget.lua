-- Snippet: drops delivery tag ARGV[1] from unacked (KEYS[1]), inflight (KEYS[2]) and leases
-- (KEYS[3]). Included by restore and ack_retry.

redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
