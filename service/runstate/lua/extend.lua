-- Queue the next wave of an adaptive run and release the finish lock. KEYS: run, todo,
-- final; ARGV: token, then the wave's flat indices. Only the holder of the finish lock
-- may extend (it took the lock when every point so far was recorded, so the wave was
-- chosen from all of them). Returns 1 queued; 0 the lock is not this token's; -1 run gone;
-- -2 run ended.
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return -1 end
local st = redis.call('HGET', KEYS[1], 'status')
if TERMINAL[st] then return -2 end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return 0 end
for i = 2, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('HINCRBY', KEYS[1], 'total', #ARGV - 1)
redis.call('HINCRBY', KEYS[1], 'waves', 1)
redis.call('DEL', KEYS[3])
return 1
