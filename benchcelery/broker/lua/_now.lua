-- Snippet: `now`, Redis's own clock in epoch seconds (TIME), so workers on hosts with skewed
-- clocks agree on leases. Included by fetch, renew and recover.
local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
