-- End a worker-held job, unless it already ended (a queued cancel, the reaper). KEYS: job
-- hash; ARGV: status, finished (client time), error. Returns 'ok', 'gone', or the terminal
-- status it already has.
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'gone' end
if TERMINAL[s] then return s end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished', ARGV[2], 'error', ARGV[3])
return 'ok'
