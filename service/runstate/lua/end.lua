-- End a run. KEYS: run, todo, leases, final; ARGV: status, finished, error, summary JSON,
-- timings JSON, token ('' = not a finisher). 'done' needs the finish lock (token); any end
-- is refused while another live finisher holds it. Returns {1, status} ended;
-- {-1, ''} run gone; {-2, status} already ended; {-3, holder} 'done' without the lock;
-- {-4, 'finishing'} someone else is finishing it.
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return {-1, ''} end
local st = redis.call('HGET', KEYS[1], 'status')
if TERMINAL[st] then return {-2, st} end
local holder = redis.call('GET', KEYS[4])
if ARGV[1] == DONE then
  if holder ~= ARGV[6] then return {-3, holder or ''} end
elseif holder and holder ~= ARGV[6] then
  return {-4, 'finishing'}
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished', ARGV[2], 'persist', 'pending')
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[3]) end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'summary', ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'timings', ARGV[5]) end
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
return {1, ARGV[1]}
