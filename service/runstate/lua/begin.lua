-- Note when a point was first leased (Redis server time, seconds), for the per-point time
-- limit. KEYS: run, begun; ARGV: index, reset after (s; 0 = never). A requeued point keeps
-- its first time, so a point that wedges every worker that takes it still runs out of
-- time; but a time older than "reset after" (the limit plus a margin: the reaper would
-- have failed the run by then had it been watching, so the whole service was down, e.g.
-- `basin up` stopped overnight) starts again. Returns 1 noted, 0 kept or run gone.
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local old = redis.call('HGET', KEYS[2], ARGV[1])
local reset = tonumber(ARGV[2])
if old and not (reset > 0 and now - tonumber(old) > reset) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], tostring(now))
return 1
