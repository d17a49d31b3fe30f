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
``worker:<name>``          string  heartbeat JSON {name, device, pid, host, run, index,
                                   job ("<kind>:<id>" of a worker-held job), fit},
                                   expires unless refreshed
``<kind>:<id>``            hash    a worker-held job (a fit, ...): spec, names, status,
                                   step, total, created, started, finished, error, cancel,
                                   worker, beat, begun, time_limit_s, and the kind's own
                                   fields (:mod:`service.jobs`)
``<kind>:<id>:<log>``      list    the job's progress log (a fit's ``losses``)
``<kind>s``                zset    job id → created (every job of the kind Redis has)
``<kind>s:active``         zset    job id → created (the ones the reaper still visits)
``active``                 zset    run id → created: runs not yet stored (the reaper's)
``demo:lm``                string  ``basin up``'s LM demo build status (JSON)
``supervisor:events``      list    ``basin up``'s supervisor events (JSON), newest first
``workers``                zset    worker name → last beat (unix seconds): which
                                   ``worker:<name>`` keys to read (no SCAN; see presence.py)
========================== ======= ====================================================

All keys start with :data:`PREFIX` (``basin:``). Every key Basin writes is named here;
nothing else spells one out. This module imports no Redis client (``basin up``'s
supervisor uses the names without loading one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    import redis

from basin.status import TERMINAL as TERMINAL

PREFIX = "basin:"
RUNS_KEY = PREFIX + "runs"
WORKER_PREFIX = PREFIX + "worker:"
#: The live-worker set (name → last beat), kept by the heartbeats: :mod:`service.runstate.presence`.
WORKERS_KEY = PREFIX + "workers"


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
#: ``basin up``'s LM demo build status (JSON; ``/api/health`` → ``demo_lm``).
DEMO_LM_STATUS_KEY = PREFIX + "demo:lm"
#: ``basin up``'s MiniLM demo build status (JSON; ``/api/health`` → ``demo``): the first start's
#: first minutes, before any checkpoint exists.
DEMO_STATUS_KEY = PREFIX + "demo:minilm"
#: ``basin up``'s supervisor events (a list of JSON, newest first; ``/api/health`` → ``supervisor``).
SUPERVISOR_EVENTS_KEY = PREFIX + "supervisor:events"


@dataclass(frozen=True)
class JobKeys:
    """The Redis keys of one job of a worker-held kind (:class:`service.jobs.WorkerJobKind`):
    its hash ``basin:<kind>:<id>`` and its progress log ``basin:<kind>:<id>:<log>``."""

    kind: str
    id: str
    log_name: str = "log"

    @property
    def hash(self) -> str:
        return f"{PREFIX}{self.kind}:{self.id}"

    @property
    def log(self) -> str:
        return f"{self.hash}:{self.log_name}"

    def all(self) -> list[str]:
        return [self.hash, self.log]


def job_index_key(kind: str) -> str:
    """The zset of every job of ``kind`` Redis has (``basin:fits``)."""
    return f"{PREFIX}{kind}s"


def job_active_key(kind: str) -> str:
    """The zset of the jobs of ``kind`` the reaper still visits (``basin:fits:active``)."""
    return f"{PREFIX}{kind}s:active"


class FitKeys(JobKeys):
    """A curve fit's keys: ``basin:fit:<id>`` and ``basin:fit:<id>:losses``."""

    def __init__(self, id: str) -> None:
        super().__init__("fit", id, "losses")

    @property
    def fit(self) -> str:
        return self.hash

    @property
    def losses(self) -> str:
        return self.log


FITS_KEY = job_index_key("fit")
ACTIVE_FITS_KEY = job_active_key("fit")


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
