-- Snippet: returns -1 unless delivery tag ARGV[1] is still owned by token ARGV[2] (a worker
-- stalled past its lease must not touch the job's new holder); leaves `meta`, the decoded
-- `inflight` entry {token, list, taken at, site, queue, message tag, counted, lapsed}. Expects
-- KEYS[2] = inflight. Included by restore (_ack has its own copy, which also counts the stale finish).

local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return -1 end
local meta = cjson.decode(raw)
if meta[1] ~= ARGV[2] then return -1 end
