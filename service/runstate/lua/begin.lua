-- Note when a point was first leased (Redis server time, seconds), for the per-point time
-- limit. KEYS: run, begun; ARGV: index. A requeued point keeps its first time, so a point
-- that wedges every worker that takes it still runs out of time. Returns 1 noted, 0 not
-- (already noted, or the run is gone).
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return 0 end
local t = redis.call('TIME')
return redis.call('HSETNX', KEYS[2], ARGV[1], tostring(tonumber(t[1]) + tonumber(t[2]) / 1000000))
