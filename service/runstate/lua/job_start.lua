-- A worker starts a worker-held job (a fit, ...): queued -> running, unless it was
-- cancelled or another delivery took it. KEYS: job hash; ARGV: started (client time),
-- worker name. Notes 'beat' and 'begun' in Redis server time (the reaper's clock: sign of
-- life and time limit). Returns 'ok', or the status it found ('gone' when none).
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= QUEUED then return s or 'gone' end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('HSET', KEYS[1], 'status', RUNNING, 'started', ARGV[1], 'worker', ARGV[2],
           'beat', now, 'begun', now)
return 'ok'
