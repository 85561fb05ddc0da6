#!lua
-- fetch: take the next job (or a batch of short ones) of the given queues and park it in flight, in
-- one step (no moment at which a popped message is held only by a client). The sites of a queue
-- take turns. First it applies the acks that ride with it (the jobs the worker finished since its
-- last fetch), each as ack.lua would (snippet _ack; those plainly still owned together): one
-- script per job, or per batch, for a busy worker.
--
-- Key schema (<p> = the bench prefix, bc:<bench_id>:; names in bench/keys.py):
--   <p>unacked            hash    delivery tag -> the message exactly as it waited
--   <p>inflight           hash    delivery tag -> JSON [owner token, source list, taken at, site,
--                                 queue, message tag or false (not read), 1 if counted in
--                                 running:<queue> else 0, 1 if the message's lease had lapsed
--                                 before else 0]
--   <p>leases             zset    delivery tag -> lease expiry (epoch s, Redis's clock)
--   <p>redeliveries       hash    message tag -> times its lease lapsed before
--   <p>stale_acks         string  acks carried here whose token no longer owned the job (ack.lua)
--   <p>lost_acks          string  acks carried here of takes Redis had no record of (ack.lua)
--   <p>lapsed_takes       zset    takes put back by recover or failed on in the last day (a
--                                 carried ack of one is stale, not lost; while any is there,
--                                 the messages' lapses are read)
--   <p>rates              hash    <method> / <site>\x1f<method> -> ms between two starts (config);
--                                 \x1e<method> -> <ms> or s<ms>: an app's decorator, whole bench or
--                                 each site (ignored when <method> is set: the common config wins;
--                                 its per-site form yields to <site>\x1f<method>)
--   <p>rate:<name>        string  next free start of a rate limit (GCRA, ms), written here
--   <p>pending:<queue>    hash    site -> waiting jobs of the queue (decremented here)
--   <p>wake:<queue>       list    wake tokens of idle workers: cleared here for the queues found
--                                 without a job to take, only when the fetch took nothing at all
--                                 (its worker is about to block on them); a carried ack of a
--                                 capped site's job pushes one (_uncount)
--   <p>sites:<queue>      zset    site -> virtual time; the sites with waiting jobs
--   <p>fair:<queue>       hash    clock, w:<site> weight, c:<site> cap, p:<site> paused
--   <p>running:<queue>    hash    site -> running jobs of a capped site (incremented here;
--                                 decremented by a carried ack)
--   <p>q:<queue>:<site>[\x06\x16<n>]   lists   a site's waiting messages, one per priority bucket
--   <p>paused             set     paused queue names (bench queue pause)
--
-- KEYS[1] unacked, KEYS[2] inflight, KEYS[3] leases, KEYS[4] redeliveries, KEYS[5] rates,
--   KEYS[6] stale_acks, KEYS[7] lost_acks, KEYS[8] lapsed_takes, then for each queue (in ARGV's
--   order): pending, wake, sites, fair, running; last, <p>paused.
-- ARGV[1] owner token, ARGV[2] lease (seconds), ARGV[3] the bench prefix, ARGV[4] the most jobs to
--   take, ARGV[5] '1' when a queue a job was taken from goes last for the next (round_robin), else
--   '0', ARGV[6] n, the number of acks carried, ARGV[7 .. 6 + 2n] their delivery tag / owner token
--   pairs, then the queue names.
-- A site's four priority buckets are popped with one LMPOP on Redis >= 7.0 (whose Lua has
-- redis.REDIS_VERSION_NUM; the server, not the caller, decides: the bench's ACL user may not run
-- INFO), with an RPOP per bucket before that.
--
-- Queues in ARGV's order; within a queue, the site with the lowest virtual time that is not paused,
-- not at its cap and whose next job is not held back by a rate limit; within the site, priority
-- buckets in order (at_front first). A turn adds 1/weight to the site's virtual time (a site new to
-- the ring starts at 0 and is served next, then continues from the queue's clock). A paused queue
-- (bench queue pause: its name is in <p>paused, the last key) is skipped whole: its jobs wait,
-- still counted (its wake tokens are cleared with the others when the fetch takes nothing).
-- A take's delivery tag is its owner token, a fresh identity no other take's ack can match (a job
-- put back after its lease lapsed may still be running on a stalled worker, perhaps in this very
-- process). Lapses are counted under the message's own tag (inflight element 6): read here only
-- when some take lapsed in the last day (else false, and recover decodes the message if its
-- lease lapses).
-- Under maxmemory (noeviction) Redis refuses the whole script before it runs (#!lua, no
-- allow-oom): nothing is taken that could not be parked.
-- Up to ARGV[4] jobs are taken, each in its own turn (the queues and sites in the order above, so
-- queues (round_robin) and sites still take turns job by job), except that a site alone in its queue's turns gives as many
-- as are wanted in one (LMPOP ... COUNT) while no rate limit, lapse or cap needs each message read
-- or counted. The worker asks for more than one only while its jobs are short (poll.py).
-- Returns {acks, passed, taken}: acks, the outcome of each carried ack in order (1, -1 stale,
-- -2 lost: as ack.lua); passed, how many queues (in ARGV's order) were found without a job to
-- take before the first one taken (all of them when none was); taken, {queue, delivery tag,
-- message, earlier lapses} of each job taken, one after the other, else the ms until a rate limit
-- lets a waiting job start, or 0.
--#include _now

local P = ARGV[3]
local LMPOP = (tonumber(redis.REDIS_VERSION_NUM) or 0) >= 0x070000
local want = tonumber(ARGV[4])
local ROTATE = ARGV[5] == '1'
local nacks = tonumber(ARGV[6])
local Q0 = 6 + 2 * nacks  -- ARGV[Q0 + q] is queue q
local nq = #ARGV - Q0
local STALE_ACKS, LOST_ACKS, LAPSED_TAKES = KEYS[6], KEYS[7], KEYS[8]
local RUNNING, WAKE = P .. 'running:', P .. 'wake:'
--#include _ack
-- The carried acks: one HMGET of their records. Those this worker plainly still owns (its token,
-- not counted against a site's cap, no earlier lapse) are forgotten together (one HDEL of each
-- hash, one ZREM); any other (and a tag carried twice) as ack.lua would, one by one (ack_one).
local outcomes = {}
if nacks > 0 and nacks <= 1000 then
  local tags, plain, later, seen = {}, {}, {}, {}
  for a = 1, nacks do tags[a] = ARGV[5 + 2 * a] end
  local raws = redis.call('HMGET', KEYS[2], unpack(tags))
  for a = 1, nacks do
    local tag, token = tags[a], ARGV[6 + 2 * a]
    if seen[tag] then
      later[#later + 1] = a
    else
      local meta = raws[a] and cjson.decode(raws[a])
      if meta and meta[1] == token and meta[7] == 0 and meta[8] == 0 then
        plain[#plain + 1] = tag
        outcomes[a] = 1
      else
        outcomes[a] = ack_one(tag, token)
      end
      seen[tag] = true
    end
  end
  if #plain > 0 then
    redis.call('HDEL', KEYS[1], unpack(plain))
    redis.call('HDEL', KEYS[2], unpack(plain))
    redis.call('ZREM', KEYS[3], unpack(plain))
  end
  for _, a in ipairs(later) do outcomes[a] = ack_one(tags[a], ARGV[6 + 2 * a]) end
else
  for a = 1, nacks do outcomes[a] = ack_one(ARGV[5 + 2 * a], ARGV[6 + 2 * a]) end
end
local SEP = '\6\22'
local STEPS = {'', SEP .. '3', SEP .. '6', SEP .. '9'}
local SCAN = 16
local LOOK = 8  -- jobs of one site looked at past those a rate limit holds back
local nowms = now * 1000
local wait = nil
-- Three features most benches never use are found with one EXISTS: paused queues (the last key,
-- <p>paused), rate limits (KEYS[5]) and lapses in the last day (KEYS[8], lapsed_takes). Only then
-- are the paused set read and messages decoded (for their method when rate limits exist, their own
-- tag when lapses may be counted: a lapse older than a day is not read).
local paused, RATED, LAPSED = {}, false, false
if redis.call('EXISTS', KEYS[5], KEYS[8], KEYS[#KEYS]) > 0 then
  for _, name in ipairs(redis.call('SMEMBERS', KEYS[#KEYS])) do paused[name] = true end
  RATED = redis.call('EXISTS', KEYS[5]) == 1
  LAPSED = redis.call('EXISTS', KEYS[8]) == 1
end
local take
--#include _describe

local function pop(base)
  if LMPOP then
    local got = redis.call('LMPOP', 4, base, base .. STEPS[2], base .. STEPS[3], base .. STEPS[4], 'RIGHT')
    if got then return got[2][1], got[1] end
    return nil, nil
  end
  for s = 1, 4 do
    local item = redis.call('RPOP', base .. STEPS[s])
    if item then return item, base .. STEPS[s] end
  end
  return nil, nil
end

-- ms until `method` of `site` may start (0: it may, and the start is counted)
local function rate_wait(site, method)
  local names = {method, site .. '\31' .. method}
  local f = redis.call('HMGET', KEYS[5], names[1], names[2], '\30' .. method)
  local intervals = {tonumber(f[1]), tonumber(f[2])}
  if f[3] and not f[1] then  -- the app's decorator: 'ms' for the whole bench, 's<ms>' per site
    local whole = tonumber(f[3])
    if whole then intervals[1] = whole
    elseif not f[2] then intervals[2] = tonumber(string.sub(f[3], 2)) end
  end
  local longest, due = 0, {}
  for i = 1, 2 do
    local interval = intervals[i]
    if interval then
      local key = P .. 'rate:' .. names[i]
      local tat = tonumber(redis.call('GET', key)) or 0
      -- under a steady limit tat stays within 1.1 intervals of now; further out, it was counted
      -- under a stricter one (a config edit, a changed decorator): the new limit holds from now
      if tat - nowms > 1.1 * interval then
        tat = nowms + interval
        redis.call('SET', key, string.format('%.3f', tat), 'PX', math.ceil(2 * interval + 1000))
      end
      -- a start may come a tenth of an interval early (catching up a late poll), no more: over any
      -- span the starts stay within one of span / interval
      if tat - nowms > interval / 10 then
        longest = math.max(longest, tat - nowms - interval / 10)
      else
        table.insert(due, {key, math.max(tat, nowms) + interval, interval})
      end
    end
  end
  if longest > 0 then return longest end
  for _, d in ipairs(due) do
    redis.call('SET', d[1], string.format('%.3f', d[2]), 'PX', math.ceil(2 * d[3] + 1000))
  end
  return 0
end

-- the site's next job that no rate limit holds back (looking at most LOOK deep); the jobs held back
-- go back where they were, in their order. Returns item, its list, its tag, whether any was held.
function take(site, sbase)
  local held = {}
  local item, list, tag, method
  for _ = 1, LOOK do
    item, list = pop(sbase)
    if not item then break end
    if RATED or LAPSED then tag, method = describe(item) end
    local ms = RATED and method and rate_wait(site, method) or 0
    if ms == 0 then break end
    wait = math.min(wait or ms, ms)
    table.insert(held, {list, item})
    item = nil
  end
  for h = #held, 1, -1 do redis.call('RPUSH', held[h][1], held[h][2]) end
  return item, list, tag, #held > 0
end

-- What this fetch takes, parked together at the end (one HSET of unacked, one of inflight, one
-- ZADD of leases): take k's delivery tag (and owner token) is ARGV[1], then ARGV[1] .. '.' .. k.
local taken, parked, records, leases = {}, {}, {}, {}
local expiry = now + tonumber(ARGV[2])
local function park(queue, list, site, item, own, counted, lapses)
  local k = #taken / 4 + 1
  local tag = k == 1 and ARGV[1] or ARGV[1] .. '.' .. k
  local n = #parked
  parked[n + 1], parked[n + 2] = tag, item
  records[n + 1], records[n + 2] = tag, cjson.encode({tag, list, now, site, queue, own, counted, lapses > 0 and 1 or 0})
  leases[n + 1], leases[n + 2] = expiry, tag
  taken[#taken + 1], taken[#taken + 2], taken[#taken + 3], taken[#taken + 4] = queue, tag, item, lapses
end

-- One turn: the next job of the first queue that has one to take (and, from a site alone in its
-- queue's turns with nothing that needs a message read or a cap counted, as many more of that
-- site's as are still wanted, with one LMPOP; under round_robin only once every other queue was
-- found with none). Returns the queue's place in ARGV and in the turn's order, or nil when none
-- has.
local empty, nempty = {}, 0  -- queues this fetch found with no job to take, and how many
local order = {}  -- the queues' places in ARGV, in the order of the next turn
for q = 1, nq do order[q] = q end
local function turn()
  for at, q in ipairs(order) do
    local queue = ARGV[Q0 + q]
    local base = 8 + (q - 1) * 5
    local pending, ring, fair, running = KEYS[base + 1], KEYS[base + 3], KEYS[base + 4], KEYS[base + 5]
    local offset = 0
    while not paused[queue] and not empty[q] do
      local batch = redis.call('ZRANGE', ring, offset, offset + SCAN - 1, 'WITHSCORES')
      if #batch == 0 then break end
      local removed = 0
      for i = 1, #batch, 2 do
        local site = batch[i]
        local policy = redis.call('HMGET', fair, 'p:' .. site, 'c:' .. site, 'w:' .. site)
        local cap = tonumber(policy[2])
        if not policy[1] and not (cap and (tonumber(redis.call('HGET', running, site)) or 0) >= cap) then
          local sbase = P .. 'q:' .. queue .. ':' .. site
          local item, list, tag, held = take(site, sbase)
          if not item then
            if not held then
              redis.call('ZREM', ring, site)  -- nothing waits: it rejoins with its next job
              removed = removed + 1
            end
          else
            local lapses = 0
            if LAPSED and tag then lapses = tonumber(redis.call('HGET', KEYS[4], tag) or 0) end
            local own = LAPSED and tag or false  -- not read: recover reads it if the lease lapses
            park(queue, list, site, item, own, cap and 1 or 0, lapses)
            local count, more = 1, want - #taken / 4
            local alone = #batch == 2 and offset == 0 and (not ROTATE or nempty == nq - 1)
            if more > 0 and LMPOP and alone and not (cap or RATED or LAPSED) then
              local got = redis.call('LMPOP', 4, sbase, sbase .. STEPS[2], sbase .. STEPS[3], sbase .. STEPS[4], 'RIGHT', 'COUNT', more)
              if got then
                for _, it in ipairs(got[2]) do park(queue, got[1], site, it, false, 0, 0) end
                count = count + #got[2]
              end
            end
            local left = redis.call('HINCRBY', pending, site, -count)
            if cap then redis.call('HINCRBY', running, site, 1) end
            if #batch > 2 or offset > 0 then  -- other sites wait: this one's turn is spent
              local clock = tonumber(redis.call('HGET', fair, 'clock')) or 0
              local start = math.max(tonumber(batch[i + 1]), clock)
              redis.call('ZADD', ring, 'XX', start + 1 / (tonumber(policy[3]) or 1), site)
              if start > clock then redis.call('HSET', fair, 'clock', start) end
            end
            if left <= 0 then  -- the counter says empty: check the lists, repair the counter
              local n = 0
              for s = 1, 4 do n = n + redis.call('LLEN', sbase .. STEPS[s]) end
              if n == 0 then
                redis.call('ZREM', ring, site)
                redis.call('HDEL', pending, site)
              else
                redis.call('HSET', pending, site, n)
              end
            end
            return q, at
          end
        end
      end
      if #batch < 2 * SCAN then break end
      offset = offset + SCAN - removed
    end
    if not empty[q] then empty[q], nempty = true, nempty + 1 end
  end
  return nil
end

local passed = nil
while #taken < 4 * want do
  local q, at = turn()
  if not q then break end
  passed = passed or at - 1
  if ROTATE then table.remove(order, at) order[#order + 1] = q end
end
if #taken > 0 then
  redis.call('HSET', KEYS[1], unpack(parked))
  redis.call('HSET', KEYS[2], unpack(records))
  redis.call('ZADD', KEYS[3], unpack(leases))
  return {outcomes, passed, taken}
end
-- nothing taken: the worker blocks on the wake lists next, so their tokens are spent
for q = 1, nq do redis.call('DEL', KEYS[8 + (q - 1) * 5 + 2]) end
return {outcomes, nq, wait and math.max(1, math.ceil(wait)) or 0}
