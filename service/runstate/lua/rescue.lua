-- Should the reaper re-queue a drain task? KEYS: run, leases, final, rescue; ARGV: '1' when
-- a live worker is draining the run, rescue TTL (s), '1' when some live worker is idle,
-- grace (s) a queued run waits before it counts as lost.
-- A running run that nobody drains, with no live lease and no finisher, is orphaned (its
-- workers died; Celery will not redeliver their tasks before the visibility timeout). A
-- queued run older than the grace that nobody drains while a worker sits idle lost its
-- tasks (taken by a worker that died, or dropped with the broker's queue).
-- Returns 1 (and sets the mark) or 0. The mark means "a rescue task is on its way": the
-- worker that takes a task of the run clears it, so at most one rescue task waits per
-- run; its TTL covers a lost task.
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= RUNNING and st ~= QUEUED then return 0 end
if ARGV[1] == '1' or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if st == QUEUED then
  if ARGV[3] ~= '1' then return 0 end
  local created = tonumber(redis.call('HGET', KEYS[1], 'created') or '0')
  if now - created < tonumber(ARGV[4]) then return 0 end
end
if redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf') > 0 then return 0 end
if redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[2]) then return 1 end
return 0
