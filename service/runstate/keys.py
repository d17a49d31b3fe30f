"""The Redis key layout of a run (see ``docs/contracts.md``).

========================== ======= ====================================================
``run:<id>``               hash    spec (JSON), status, total, done, created, started,
                                   finished, error, summary, anchors (JSON), names (JSON),
                                   evaluations, cached, load_s, eval_s, device, persist,
                                   waves (adaptive runs: waves queued after the first;
                                   ``total`` = points queued so far)
``run:<id>:todo``          list    flat point indices still to do, coarse → fine
``run:<id>:leases``        zset    index → lease deadline (Redis server time, seconds)
``run:<id>:done``          set     indices recorded (guards against double recording)
``run:<id>:points``        stream  one entry per point: ``point`` = JSON {index, coords,
                                   metrics}, ``worker``, ``cached`` ("1" when reused)
``run:<id>:final``         string  finish lock: token of the one worker finishing the run;
                                   short TTL renewed by its heartbeat
``run:<id>:rescue``        string  the reaper re-queued a drain task for an orphaned run; a
                                   worker starting a task of the run clears it
``run:<id>:begun``         hash    index → when the point was first leased (server time,
                                   seconds): the per-point time limit
``runs``                   zset    run id → created (unix seconds)
``pointcache:<key>``       string  metrics JSON for ``Landscape.point_key`` (cross-run cache)
``worker:<name>``          string  heartbeat JSON {name, device, pid, host, run, index},
                                   expires unless refreshed
``workers``                zset    worker name → last beat (unix seconds): which
                                   ``worker:<name>`` keys to read (no SCAN; see presence.py)
========================== ======= ====================================================

All keys start with :data:`PREFIX` (``basin:``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import redis

PREFIX = "basin:"
RUNS_KEY = PREFIX + "runs"
WORKER_PREFIX = PREFIX + "worker:"
#: The live-worker set (name → last beat), kept by the heartbeats: :mod:`service.runstate.presence`.
WORKERS_KEY = PREFIX + "workers"
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

    @property
    def begun(self) -> str:
        return f"{self.run}:begun"

    def all(self) -> list[str]:
        return [self.run, self.todo, self.leases, self.done, self.points, self.final, self.rescue,
                self.begun]


def pointcache_key(point_key: str) -> str:
    return f"{PREFIX}pointcache:{point_key}"


def worker_key(name: str) -> str:
    return WORKER_PREFIX + name


#: Runs not yet stored as result documents (zset run id → created): what the reaper visits.
ACTIVE_KEY = PREFIX + "active"


def prune_index(client: redis.Redis, index: str, hash_key: Callable[[str], str], batch: int = 200) -> int:
    """Drop from the sorted set ``index`` (runs, fits) the oldest ids whose hash (``hash_key(id)``)
    expired or was deleted; returns how many."""
    ids = cast("list[str]", client.zrange(index, 0, batch - 1))
    if not ids:
        return 0
    pipe = client.pipeline(transaction=False)
    for i in ids:
        pipe.exists(hash_key(i))
    gone = [i for i, n in zip(ids, pipe.execute(), strict=True) if not n]
    if gone:
        client.zrem(index, *gone)
    return len(gone)
