-- The reaper fails a running worker-held job whose worker gave no sign of life for ARGV[1]
-- seconds (Redis server time). KEYS: job hash; ARGV: grace, finished (client time, like
-- every 'finished'), error. Returns 'failed', 'alive', or the status it found.
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= RUNNING then return s or 'gone' end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local beat = tonumber(redis.call('HGET', KEYS[1], 'beat') or '0') or 0
if now - beat < tonumber(ARGV[1]) then return 'alive' end
redis.call('HSET', KEYS[1], 'status', FAILED, 'finished', ARGV[2], 'error', ARGV[3])
return 'failed'
