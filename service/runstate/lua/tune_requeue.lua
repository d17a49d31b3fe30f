-- The reaper puts back a running member of a tune family whose worker gave no sign of life
-- for ARGV[1] seconds (Redis server time): the member is queued again as a new attempt (its
-- loss log restarts; training is deterministic, so the new attempt repeats the same steps),
-- or, past ARGV[2] attempts, ends failed with ARGV[3]. KEYS[1]: member hash; KEYS[2]: its
-- loss log; ARGV[4]: finished (client time). Returns 'requeued', 'failed', 'alive', or the
-- status it found.
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= RUNNING then return s or 'gone' end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local beat = tonumber(redis.call('HGET', KEYS[1], 'beat') or '0') or 0
if now - beat < tonumber(ARGV[1]) then return 'alive' end
local attempt = tonumber(redis.call('HGET', KEYS[1], 'attempt') or '1') or 1
if attempt >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'status', FAILED, 'finished', ARGV[4], 'error', ARGV[3])
  return 'failed'
end
local lost = redis.call('HGET', KEYS[1], 'worker') or ''
redis.call('HSET', KEYS[1], 'status', QUEUED, 'attempt', tostring(attempt + 1), 'step', '0',
           'worker', '', 'lost_worker', lost)
redis.call('HDEL', KEYS[1], 'beat', 'begun', 'eta_s')
redis.call('DEL', KEYS[2])
return 'requeued'
