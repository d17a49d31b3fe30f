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
``run:<id>:final``         string  finish lock: token of the one worker finishing the run;
                                   short TTL renewed by its heartbeat, so a finisher that
                                   dies releases it within seconds
``run:<id>:rescue``        string  the API re-queued a drain task for an orphaned run; a
                                   worker starting a task of the run clears it
``runs``                   zset    run id → created (unix seconds)
``pointcache:<key>``       string  metrics JSON for ``Landscape.point_key`` (cross-run cache)
``worker:<name>``          string  heartbeat JSON {name, device, pid, host, run, index},
                                   expires unless refreshed
========================== ======= ====================================================

Every state change is one Lua script, so two workers never lease the same index and a
point is recorded at most once: :data:`LEASE_LUA` requeues expired leases and pops the
next index not yet done; :data:`RECORD_LUA` adds the index to the done set and, only if
it was new, appends it to the stream; :data:`CLAIM_FINISH_LUA` takes the finish lock
only when every point is recorded; :data:`END_LUA` is the only way a run becomes
``done`` / ``failed`` / ``cancelled`` (a finisher must still hold the lock; nobody else
may end a run while a live finisher holds it). The terminal state is then written to
the store by :func:`persist_run` (``persist`` = ``pending`` in the hash until it is).
Imports only redis.
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

    @property
    def rescue(self) -> str:
        return f"{self.run}:rescue"

    def all(self) -> list[str]:
        return [self.run, self.todo, self.leases, self.done, self.points, self.final, self.rescue]


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


# Take the finish lock. KEYS: run, todo, leases, done, final; ARGV: token, ttl_ms.
# Returns 1 taken; 0 another finisher holds it; -1 run gone; -2 run ended;
# -3 points still to do or leased; -4 fewer points recorded than the total.
CLAIM_FINISH_LUA = """
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return -1 end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'done' or st == 'failed' or st == 'cancelled' then return -2 end
if redis.call('LLEN', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[3]) > 0 then return -3 end
local total = tonumber(redis.call('HGET', KEYS[1], 'total') or '0')
if redis.call('SCARD', KEYS[4]) < total then return -4 end
if redis.call('SET', KEYS[5], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# Keep the finish lock while its holder works (only if the token still matches).
RENEW_FINISH_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# End a run. KEYS: run, todo, leases, final; ARGV: status, finished, error, summary JSON,
# timings JSON, token ('' = not a finisher). 'done' needs the finish lock (token); any end
# is refused while another live finisher holds it. Returns {1, status} ended;
# {-1, ''} run gone; {-2, status} already ended; {-3, holder} 'done' without the lock;
# {-4, 'finishing'} someone else is finishing it.
END_LUA = """
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return {-1, ''} end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'done' or st == 'failed' or st == 'cancelled' then return {-2, st} end
local holder = redis.call('GET', KEYS[4])
if ARGV[1] == 'done' then
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
"""

# Note what a worker found when it opened the run, only while the run exists (a delete
# racing it must not leave a stray hash behind). KEYS: run; ARGV: anchors JSON, device,
# load seconds.
SETUP_LUA = """
if redis.call('HEXISTS', KEYS[1], 'spec') == 0 then return 0 end
redis.call('HSETNX', KEYS[1], 'anchors', ARGV[1])
redis.call('HSETNX', KEYS[1], 'device', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('HINCRBYFLOAT', KEYS[1], 'load_s', ARGV[3]) end
return 1
"""

# Should the API re-queue a drain task? KEYS: run, leases, final, rescue; ARGV: '1' when a
# live worker is draining the run, rescue TTL (s). A running run that nobody drains, with
# no live lease and no finisher, is orphaned (its workers died; Celery will not redeliver
# their tasks before the visibility timeout). Returns 1 (and sets the mark) or 0. The
# mark means "a rescue task is on its way": the worker that takes a task of the run
# clears it, so at most one rescue task waits per run; its TTL covers a lost task.
RESCUE_LUA = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if ARGV[1] == '1' or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf') > 0 then return 0 end
if redis.call('SET', KEYS[4], '1', 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""


@dataclass(frozen=True)
class Lease:
    """What :meth:`RunQueue.lease` found: an ``index``, or why there is none."""

    index: int | None = None
    gone: bool = False  # the run was deleted
    status: str | None = None  # a terminal status when the run is over
    leases_left: int = 0  # others' live leases when the todo list is empty
    wait_s: float = 0.0  # until the earliest of those expires


@dataclass(frozen=True)
class Ended:
    """What :meth:`RunQueue.end` did: ``ok`` when this call ended the run."""

    ok: bool
    status: str  # the run's terminal status (this call's or the earlier one), or why not
    gone: bool = False


class RunQueue:
    """One run's atomic steps (Lua scripts): lease, record, renew, finish lock, end, rescue."""

    def __init__(self, client: redis.Redis, run_id: str):
        self.r = client
        self.keys = RunKeys(run_id)
        self._lease = client.register_script(LEASE_LUA)
        self._record = client.register_script(RECORD_LUA)
        self._renew = client.register_script(RENEW_LUA)
        self._claim = client.register_script(CLAIM_FINISH_LUA)
        self._renew_finish = client.register_script(RENEW_FINISH_LUA)
        self._end = client.register_script(END_LUA)
        self._rescue = client.register_script(RESCUE_LUA)
        self._setup = client.register_script(SETUP_LUA)

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

    def claim_finish(self, token: str, ttl_s: float) -> int:
        """Take the finish lock for ``ttl_s`` seconds: 1 taken, 0 held by another finisher,
        negative when there is nothing to finish (see :data:`CLAIM_FINISH_LUA`)."""
        k = self.keys
        return int(
            self._claim(
                keys=[k.run, k.todo, k.leases, k.done, k.final],
                args=[token, max(1, int(ttl_s * 1000))],
            )
        )

    def renew_finish(self, token: str, ttl_s: float) -> bool:
        """Extend the finish lock while ``token`` holds it (False when it was lost)."""
        return bool(
            self._renew_finish(keys=[self.keys.final], args=[token, max(1, int(ttl_s * 1000))])
        )

    def end(
        self,
        status: str,
        *,
        finished: float | None = None,
        error: str | None = None,
        summary: Any = None,
        timings: Any = None,
        token: str = "",
    ) -> Ended:
        """Move the run to ``status`` (``done``, ``failed``, ``cancelled``) unless it already
        ended, it was deleted, or a live finisher other than ``token`` holds the lock
        (``done`` requires holding it). Marks the run ``persist: pending``."""
        k = self.keys
        out = self._end(
            keys=[k.run, k.todo, k.leases, k.final],
            args=[
                status,
                repr(float(finished if finished is not None else time.time())),
                error or "",
                "" if summary is None else json.dumps(summary),
                "" if timings is None else json.dumps(timings),
                token,
            ],
        )
        code, what = int(out[0]), _s(out[1])
        return Ended(ok=code == 1, status=what, gone=code == -1)

    def setup(self, anchors: Any, device: str, load_s: float = 0.0) -> bool:
        """Note the anchors and device (first writer wins) and add the load time, only
        while the run exists; False when it was deleted."""
        return bool(
            self._setup(
                keys=[self.keys.run], args=[json.dumps(anchors), device, repr(float(load_s))]
            )
        )

    def claim_rescue(self, *, draining: bool, ttl_s: int) -> bool:
        """True when the run is ``running`` but orphaned (no live worker drains it, per
        ``draining``; no live lease; no finish lock) and no rescue task is pending (one
        pending rescue is remembered for ``ttl_s`` or until a worker takes a task)."""
        k = self.keys
        return bool(
            self._rescue(
                keys=[k.run, k.leases, k.final, k.rescue],
                args=["1" if draining else "0", max(1, int(ttl_s))],
            )
        )


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


def run_timings(h: dict[str, str], finished: float, n_points: int) -> dict[str, Any]:
    """The result document's ``timings`` from a run hash: seconds and counts.

    ``total_s`` = finished − started (or created); ``points_per_s`` = n_points / total_s.
    """
    started = float(h.get("started") or h.get("created") or finished)
    total_s = max(finished - started, 1e-9)
    return {
        "load_s": round(float(h.get("load_s") or 0.0), 4),
        "eval_s": round(float(h.get("eval_s") or 0.0), 4),
        "total_s": round(total_s, 4),
        "points_per_s": round(n_points / total_s, 4),
        "device": h.get("device") or "cpu",
        "evaluations": int(h.get("evaluations") or 0),
        "cached_points": int(h.get("cached") or 0),
    }


def json_or(v: str | None, default: Any = None) -> Any:
    """``json.loads(v)``, or ``default`` for a missing or malformed value."""
    if not v:
        return default
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return default


def build_document(client: redis.Redis, run_id: str) -> dict | None:
    """The result document of a run from its Redis state (``None`` when Redis lacks it).

    ``{id, spec, points (sorted by index), anchors, names, summary, timings, status,
    created, finished, total, error}``: the contract's document plus the service fields.
    Once the status is terminal, nothing changes any more, so two builders agree.
    """
    k = RunKeys(run_id)
    h = {_s(a): _s(b) for a, b in client.hgetall(k.run).items()}
    if "spec" not in h:
        return None
    points, _ = read_points(client, run_id)  # after the status: a terminal stream is complete
    points.sort(key=lambda p: p["index"])
    finished = float(h["finished"]) if h.get("finished") else None
    created = float(h.get("created") or 0.0) or None
    return {
        "id": run_id,
        "spec": json_or(h["spec"], {}),
        "points": points,
        "anchors": json_or(h.get("anchors"), []),
        "names": json_or(h.get("names"), {}),
        "summary": json_or(h.get("summary")),
        "timings": json_or(h.get("timings")) or run_timings(h, finished or time.time(), len(points)),
        "status": h.get("status", "queued"),
        "created": created,
        "finished": finished,
        "total": int(h.get("total") or len(points)),
        "error": h.get("error") or None,
    }


def persist_run(client: redis.Redis, store: Any, run_id: str) -> bool:
    """Write an ended run's document with ``store.save_run`` (idempotent); True when written.

    Runs that have not ended are not written. If the run is deleted while the document is
    being written, the document is removed again, so a delete never leaves it behind.
    """
    k = RunKeys(run_id)
    doc = build_document(client, run_id)
    if doc is None or doc["status"] not in TERMINAL:
        return False
    store.save_run(run_id, doc)
    if not client.hexists(k.run, "spec"):  # deleted meanwhile: do not resurrect it
        store.delete_run(run_id)
        return False
    client.hdel(k.run, "persist")
    return True
