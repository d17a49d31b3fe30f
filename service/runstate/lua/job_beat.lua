-- A sign of life of a running job's worker: 'beat' = Redis server time (the reaper compares
-- it with the same clock). KEYS: job hash. Never recreates an expired or deleted job.
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= RUNNING then return s or 'gone' end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'beat', tonumber(t[1]) + tonumber(t[2]) / 1000000)
return 'ok'
