-- Cancel a worker-held job atomically: a queued one ends at once; a running one is flagged
-- for its worker (it checks before its next step). KEYS: job hash; ARGV: finished (client
-- time). Returns 'ok', 'gone', or the terminal status it already has.
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'gone' end
if TERMINAL[s] then return s end
redis.call('HSET', KEYS[1], 'cancel', '1')
if s == QUEUED then
  redis.call('HSET', KEYS[1], 'status', CANCELLED, 'finished', ARGV[1])
end
return 'ok'
