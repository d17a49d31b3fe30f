-- End one member of a tune family, only by the attempt that holds it: the member must be
-- running, held by worker ARGV[4] in attempt ARGV[5] (a worker the reaper gave up on, whose
-- member was re-queued, cannot end it: a member finishes exactly once). KEYS[1]: member hash;
-- ARGV: status, finished (client time), error, worker, attempt, then field/value pairs to set
-- with the end. Returns 'ok', 'stale', 'gone', or the status it found.
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'gone' end
if s ~= RUNNING then return s end
if redis.call('HGET', KEYS[1], 'worker') ~= ARGV[4] or (redis.call('HGET', KEYS[1], 'attempt') or '1') ~= ARGV[5] then
  return 'stale'
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished', ARGV[2], 'error', ARGV[3])
for i = 6, #ARGV - 1, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 'ok'
