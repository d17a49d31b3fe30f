-- Returns 1 recorded, 0 already recorded (duplicate), -1 run gone, -2 run cancelled/finished.
-- ARGV: index, point JSON, worker name, cached ("1"/"0"), evaluation seconds.
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return -1 end
redis.call('ZREM', KEYS[4], ARGV[1])
if ARGV[4] == '0' then
  redis.call('HINCRBY', KEYS[1], 'evaluations', 1)
  redis.call('HINCRBYFLOAT', KEYS[1], 'eval_s', ARGV[5])
end
local st = redis.call('HGET', KEYS[1], 'status')
if st == CANCELLED or st == FAILED then return -2 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[3], '*', 'point', ARGV[2], 'worker', ARGV[3], 'cached', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'done', 1)
  if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'cached', 1) end
  return 1
end
return 0
