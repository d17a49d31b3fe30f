-- The reaper fails a running worker-held job that has run longer than its time limit
-- ('time_limit_s', set when it was created; 0 or none = no limit) plus ARGV[1] seconds of
-- grace, from 'begun' (Redis server time): its worker should have stopped it itself, so it
-- is wedged. KEYS: job hash; ARGV: grace, finished (client time), error. Returns 'failed',
-- 'in time', or the status it found.
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= RUNNING then return s or 'gone' end
local limit = tonumber(redis.call('HGET', KEYS[1], 'time_limit_s') or '0') or 0
local begun = tonumber(redis.call('HGET', KEYS[1], 'begun') or '')
if limit <= 0 or not begun then return 'in time' end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if now - begun <= limit + tonumber(ARGV[1]) then return 'in time' end
redis.call('HSET', KEYS[1], 'status', FAILED, 'finished', ARGV[2], 'error', ARGV[3])
return 'failed'
