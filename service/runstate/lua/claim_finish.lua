-- Take the finish lock. KEYS: run, todo, leases, done, final; ARGV: token, ttl_ms.
-- Returns 1 taken; 0 another finisher holds it; -1 run gone; -2 run ended;
-- -3 points still to do or leased; -4 fewer points recorded than the total.
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return -1 end
local st = redis.call('HGET', KEYS[1], 'status')
if TERMINAL[st] then return -2 end
if redis.call('LLEN', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[3]) > 0 then return -3 end
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
if redis.call('SCARD', KEYS[4]) < total then return -4 end
if redis.call('SET', KEYS[5], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
