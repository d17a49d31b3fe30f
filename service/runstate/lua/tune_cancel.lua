-- Cancel a tune family: the family ends cancelled at once; its queued members end cancelled,
-- its running members are flagged (each worker stops before its next step and ends its
-- member cancelled). KEYS[1]: family hash; KEYS[2..]: member hashes; ARGV[1]: finished
-- (client time). Returns 'ok', 'gone', or the terminal status the family already has.
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'gone' end
if TERMINAL[s] then return s end
redis.call('HSET', KEYS[1], 'cancel', '1', 'status', CANCELLED, 'finished', ARGV[1])
for i = 2, #KEYS do
  local m = redis.call('HGET', KEYS[i], 'status')
  if m == QUEUED then
    redis.call('HSET', KEYS[i], 'status', CANCELLED, 'finished', ARGV[1], 'cancel', '1')
  elseif m == RUNNING then
    redis.call('HSET', KEYS[i], 'cancel', '1')
  end
end
return 'ok'
