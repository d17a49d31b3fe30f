"""A run's state in Redis: the key layout and the atomic steps workers take on it.

Keys (prefix ``basin:``; see ``docs/contracts.md``):

========================== ======= ====================================================
``run:<id>``               hash    spec (JSON), status, total, done, created, started,
                                   finished, error, summary, anchors (JSON), evaluations,
                                   cached, load_s, eval_s, device
``run:<id>:todo``          list    flat point indices still to do, coarse → fine
``run:<id>:leases``        zset    index → lease deadline (Redis server time, seconds)
``run:<id>:done``          set     indices recorded (guards against double recording)
``run:<id>:points``        stream  one entry per point: ``point`` = JSON {index, coords,
                                   metrics}, ``worker``, ``cached`` ("1" when reused)
``run:<id>:final``         string  lock: the one worker that writes the result document
``runs``                   zset    run id → created (unix seconds)
``pointcache:<key>``       string  metrics JSON for ``Landscape.point_key`` (cross-run cache)
``worker:<name>``          string  heartbeat JSON {name, device, pid, host, run, index},
                                   expires unless refreshed
========================== ======= ====================================================

Every state change a worker makes is one Lua script, so two workers never lease the
same index and a point is recorded at most once: :data:`LEASE_LUA` requeues expired
leases and pops the next index; :data:`RECORD_LUA` adds the index to the done set and,
only if it was new, appends it to the stream. Imports only redis.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

PREFIX = "basin:"
RUNS_KEY = PREFIX + "runs"
WORKER_PREFIX = PREFIX + "worker:"
TERMINAL = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class RunKeys:
    """The Redis keys of one run."""

    id: str

    @property
    def run(self) -> str:
        return f"{PREFIX}run:{self.id}"

    @property
    def todo(self) -> str:
        return f"{self.run}:todo"

    @property
    def leases(self) -> str:
        return f"{self.run}:leases"

    @property
    def done(self) -> str:
        return f"{self.run}:done"

    @property
    def points(self) -> str:
        return f"{self.run}:points"

    @property
    def final(self) -> str:
        return f"{self.run}:final"

    def all(self) -> list[str]:
        return [self.run, self.todo, self.leases, self.done, self.points, self.final]


def pointcache_key(point_key: str) -> str:
    return f"{PREFIX}pointcache:{point_key}"


def worker_key(name: str) -> str:
    return WORKER_PREFIX + name


# Returns {index} on success; {-1} run gone; {-2, status} run finished/cancelled;
# {-3, leases_left, ms_until_first_deadline} nothing to lease right now.
LEASE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return {-1} end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'done' or st == 'failed' or st == 'cancelled' then return {-2, st} end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for i = #expired, 1, -1 do
  redis.call('ZREM', KEYS[3], expired[i])
  if redis.call('SISMEMBER', KEYS[4], expired[i]) == 0 then
    redis.call('LPUSH', KEYS[2], expired[i])
    redis.call('HINCRBY', KEYS[1], 'requeued', 1)
  end
end
local idx = redis.call('LPOP', KEYS[2])
if not idx then
  local first = redis.call('ZRANGE', KEYS[3], 0, 0, 'WITHSCORES')
  local wait = 0
  if first[2] then wait = math.floor((tonumber(first[2]) - now) * 1000) end
  return {-3, redis.call('ZCARD', KEYS[3]), wait}
end
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[1]), idx)
if st == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'running', 'started', tostring(now))
end
return {tonumber(idx)}
"""

# Returns 1 recorded, 0 already recorded (duplicate), -1 run gone, -2 run cancelled/finished.
# ARGV: index, point JSON, worker name, cached ("1"/"0"), evaluation seconds.
RECORD_LUA = """
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return -1 end
redis.call('ZREM', KEYS[4], ARGV[1])
if ARGV[4] == '0' then
  redis.call('HINCRBY', KEYS[1], 'evaluations', 1)
  redis.call('HINCRBYFLOAT', KEYS[1], 'eval_s', ARGV[5])
end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'cancelled' or st == 'failed' then return -2 end
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('XADD', KEYS[3], '*', 'point', ARGV[2], 'worker', ARGV[3], 'cached', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'done', 1)
  if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'cached', 1) end
  return 1
end
return 0
"""

# Push a live lease's deadline forward (only if the lease still exists).
RENEW_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
"""


@dataclass(frozen=True)
class Lease:
    """What :meth:`RunQueue.lease` found: an ``index``, or why there is none."""

    index: int | None = None
    gone: bool = False  # the run was deleted
    status: str | None = None  # a terminal status when the run is over
    leases_left: int = 0  # others' live leases when the todo list is empty
    wait_s: float = 0.0  # until the earliest of those expires


class RunQueue:
    """The worker side of one run: lease, record, renew (all atomic Lua scripts)."""

    def __init__(self, client: redis.Redis, run_id: str):
        self.r = client
        self.keys = RunKeys(run_id)
        self._lease = client.register_script(LEASE_LUA)
        self._record = client.register_script(RECORD_LUA)
        self._renew = client.register_script(RENEW_LUA)

    def lease(self, seconds: float) -> Lease:
        """Requeue expired leases, then pop the next index and lease it for ``seconds``."""
        k = self.keys
        out = self._lease(keys=[k.run, k.todo, k.leases, k.done], args=[seconds])
        code = int(out[0])
        if code >= 0:
            return Lease(index=code)
        if code == -1:
            return Lease(gone=True)
        if code == -2:
            return Lease(status=_s(out[1]))
        return Lease(leases_left=int(out[1]), wait_s=max(0.0, int(out[2]) / 1000))

    def record(
        self, index: int, point: dict[str, Any], *, worker: str, cached: bool, eval_s: float = 0.0
    ) -> int:
        """Record a point once: 1 new, 0 duplicate, -1 run gone, -2 run cancelled/failed.

        Also counts the evaluation (``evaluations``, ``eval_s``) unless ``cached``.
        """
        k = self.keys
        return int(
            self._record(
                keys=[k.run, k.done, k.points, k.leases],
                args=[
                    index,
                    json.dumps(point),
                    worker,
                    "1" if cached else "0",
                    repr(float(eval_s)),
                ],
            )
        )

    def renew(self, index: int, seconds: float) -> bool:
        """Extend this worker's lease on ``index`` (False when it no longer exists)."""
        return bool(self._renew(keys=[self.keys.leases], args=[index, seconds]))


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def read_points(
    client: redis.Redis, run_id: str, after: str = "-", count: int | None = None
) -> tuple[list[dict], str | None]:
    """Points in the run's stream strictly after stream id ``after``; returns (points, last id)."""
    start = "-" if after in ("", "-", "0", "0-0") else "(" + after
    entries = client.xrange(RunKeys(run_id).points, min=start, max="+", count=count)
    pts = [json.loads(_s(fields.get("point") or fields.get(b"point"))) for _, fields in entries]
    last = _s(entries[-1][0]) if entries else None
    return pts, last


def heartbeat_ttl(lease_seconds: float) -> int:
    """How long a worker's heartbeat key lives without a refresh (seconds)."""
    return int(max(3, min(30, lease_seconds)))


def alive_workers(client: redis.Redis) -> list[dict]:
    """Heartbeats of the workers alive now (their keys have not expired)."""
    names = sorted(client.scan_iter(match=WORKER_PREFIX + "*", count=100))
    out = []
    if not names:
        return out
    for raw in client.mget(names):
        if raw:
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return out


def now() -> float:
    return time.time()
