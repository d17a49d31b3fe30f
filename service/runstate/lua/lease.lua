-- Returns {index} on success; {-1} run gone; {-2, status} run finished/cancelled;
-- {-3, leases_left, ms_until_first_deadline} nothing to lease right now.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return {-1} end
local st = redis.call('HGET', KEYS[1], 'status')
if TERMINAL[st] then return {-2, st} end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for i = #expired, 1, -1 do
  redis.call('ZREM', KEYS[3], expired[i])
  if redis.call('SISMEMBER', KEYS[4], expired[i]) == 0 then
    redis.call('LPUSH', KEYS[2], expired[i])
    redis.call('HINCRBY', KEYS[1], 'requeued', 1)
  end
end
local idx = redis.call('LPOP', KEYS[2])
-- an index can be in todo and done at once: a slow worker recorded it after its lease
-- had expired and been requeued; skip it rather than evaluate it a second time
while idx and redis.call('SISMEMBER', KEYS[4], idx) == 1 do
  idx = redis.call('LPOP', KEYS[2])
end
if not idx then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  local wait = 0
  if first[2] then wait = math.floor((tonumber(first[2]) - now) * 1000) end
  return {-3, redis.call('ZCARD', KEYS[3]), wait}
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[1]), idx)
if st == QUEUED then
  redis.call('HSET', KEYS[1], 'status', RUNNING, 'started', tostring(now))
end
return {tonumber(idx)}
