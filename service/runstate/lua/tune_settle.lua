-- End a tune family once every member has ended: done when all are done, failed when one
-- failed (its error), else cancelled; a family that ended already (cancelled) keeps its
-- status. A queued family whose first member started becomes running. KEYS[1]: family
-- hash; KEYS[2..]: member hashes; ARGV[1]: finished / started (client time). Returns the
-- family's status.
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'gone' end
if TERMINAL[s] then return s end
local ended, done, failed, started, err = 0, 0, 0, false, ''
for i = 2, #KEYS do
  local m = redis.call('HGET', KEYS[i], 'status')
  if m and TERMINAL[m] then ended = ended + 1 end
  if m == DONE then done = done + 1 end
  if m and m ~= QUEUED then started = true end
  if m == FAILED then
    failed = failed + 1
    if err == '' then err = 'member ' .. (i - 2) .. ': ' .. (redis.call('HGET', KEYS[i], 'error') or '') end
  end
end
redis.call('HSET', KEYS[1], 'ended_members', ended, 'done_members', done)
if ended < #KEYS - 1 then
  if s == QUEUED and started then
    redis.call('HSET', KEYS[1], 'status', RUNNING, 'started', ARGV[1])
    return RUNNING
  end
  return s
end
local out = CANCELLED
if done == #KEYS - 1 then out = DONE elseif failed > 0 then out = FAILED end
redis.call('HSET', KEYS[1], 'status', out, 'finished', ARGV[1], 'error', err)
return out
