"""The reaper: the one place that repairs runs, on a timer, so that reads never change state.

Each pass (:func:`reap`) visits the runs not yet stored (``basin:active``):

- ended (done, failed, cancelled) but its document not yet written (``persist`` still
  set: its writer died, or it was a worker without the shared store): write it to the
  store, then forget the run here;
- running, yet no live worker drains it, no lease is live and nobody is finishing it
  (its workers died; Celery does not redeliver their tasks before the visibility
  timeout): send one drain task;
- queued for longer than a grace period while a worker sits idle and nobody drains it
  (its tasks were lost): send one drain task;
- running with a point begun longer ago than the per-point time limit and still not
  recorded (its worker is wedged, e.g. the point's code holds the GIL so the worker
  cannot check the limit itself): fail it, naming the point and the limit;
- deleted: forget it.

Each pass also visits the jobs of every other registered kind (:mod:`service.jobs`: a
curve fit, ...; when the :class:`Reaper` is given ``fit_grace_s``) by the kernel's rules
(:meth:`service.jobs.WorkerJobKind.reap`): a running job whose worker died, or that ran
past its time limit, ends ``failed`` saying so, and ended jobs' keys get the same TTL as
stored runs.

Stored runs' Redis keys expire (``finished_run_ttl_s``); the pass also drops ids whose
keys expired from the ``runs`` index in Redis (the list then reads the store's index).

One rescue at a time per run (``rescue.lua``): the next only once a worker took the
task, or after ``rescue_ttl_s`` if it was lost. :class:`Reaper` runs passes on a daemon
thread; the API starts one (``BASIN_REAP_SECONDS``). Several reapers (several API
processes) are safe: rescues are claimed atomically and storing is idempotent.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from service.documents import persist_run
from service.runstate.drain import fail_overdue
from service.runstate.keys import ACTIVE_KEY, RUNS_KEY, TERMINAL, RunKeys, prune_index
from service.runstate.queue import RunQueue
from service.runstate.reads import alive_workers

logger = logging.getLogger(__name__)

#: How long a sent rescue task counts as pending when no worker takes it (seconds). A rescue
#: is only sent while a worker could take it at once (an idle one, or none drains the run),
#: so one not taken within a minute was lost too — e.g. swallowed by a worker that hung or
#: was killed right after taking it (``basin up`` restarts such workers within seconds);
#: another is sent. A duplicate task is harmless: drains are idempotent.
RESCUE_PENDING_S = 60


@dataclass
class ReapReport:
    """What one pass did (run ids)."""

    stored: list[str] = field(default_factory=list)
    rescued: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)  # a point ran past the time limit


def _persister(client: redis.Redis, store: Any, run_id: str,
               ttl_s: int | None) -> Callable[[], bool]:
    return lambda: persist_run(client, store, run_id, ttl_s=ttl_s)


def prune_expired(client: redis.Redis, batch: int = 200) -> int:
    """Drop from ``basin:runs`` the oldest ids whose run hash expired (or was deleted)."""
    return prune_index(client, RUNS_KEY, lambda run_id: RunKeys(run_id).run, batch)


def seed_active(client: redis.Redis) -> int:
    """Add runs created before ``basin:active`` existed that still need the reaper."""
    # redis-py types replies as bytes | str; our clients use decode_responses=True
    ids = cast("list[tuple[str, float]]", client.zrange(RUNS_KEY, 0, -1, withscores=True))
    pipe = client.pipeline()
    for run_id, _ in ids:
        pipe.hmget(RunKeys(run_id).run, ["status", "persist"])
    added = 0
    for (run_id, created), (status, persist) in zip(ids, pipe.execute(), strict=True):
        if status is not None and (status not in TERMINAL or persist):
            added += cast(int, client.zadd(ACTIVE_KEY, {run_id: created}, nx=True))  # NX: a count
    return added


def reap(
    client: redis.Redis,
    store: Any,
    send_drain: Callable[[str], None],
    *,
    rescue_ttl_s: int = RESCUE_PENDING_S,
    grace_s: float = 10.0,
    point_limit_s: float = 0.0,
    finished_ttl_s: int | None = None,
    alive: list[dict] | None = None,
) -> ReapReport:
    """One pass over the active runs (see the module docstring). ``alive``: the live
    workers' heartbeats (read here when None)."""
    out = ReapReport()
    prune_expired(client)
    ids = cast("list[str]", client.zrange(ACTIVE_KEY, 0, -1))  # decode_responses=True
    if not ids:
        return out
    alive = alive_workers(client) if alive is None else alive
    draining = {w.get("run") for w in alive}
    idle = any(w.get("run") is None and not w.get("fit") and not w.get("job") for w in alive)
    for run_id in ids:
        k = RunKeys(run_id)
        status, persist = client.hmget(k.run, ["status", "persist"])
        if status is None:
            client.zrem(ACTIVE_KEY, run_id)
            out.forgotten.append(run_id)
            continue
        if status in TERMINAL:
            if persist:
                try:
                    if persist_run(client, store, run_id, ttl_s=finished_ttl_s):
                        out.stored.append(run_id)
                except OSError as e:  # the store is unwritable: serve from Redis, try again
                    logger.warning("storing run %s failed: %s", run_id, e)
                    continue
            if not client.hget(k.run, "persist"):
                client.zrem(ACTIVE_KEY, run_id)
            continue
        queue = RunQueue(client, run_id)
        if status == "running" and point_limit_s and fail_overdue(
            queue, point_limit_s, _persister(client, store, run_id, finished_ttl_s)
        ):
            out.failed.append(run_id)
            continue
        if not alive:
            continue  # nobody could take a task; the run page says so
        if queue.claim_rescue(draining=run_id in draining, ttl_s=rescue_ttl_s,
                              idle_worker=idle, grace_s=grace_s):
            send_drain(run_id)
            out.rescued.append(run_id)
            logger.warning("run %s is %s but no live worker works on it; re-queued a drain task",
                           run_id, status)
    return out


class Reaper:
    """Runs :func:`reap` every ``interval`` seconds on a daemon thread until :meth:`stop`."""

    def __init__(self, client: redis.Redis, store: Any, send_drain: Callable[[str], None], *,
                 interval: float = 1.0, grace_s: float = 10.0, point_limit_s: float = 0.0,
                 finished_ttl_s: int | None = None, fit_grace_s: float | None = None):
        self.client = client
        self.fit_grace_s = fit_grace_s
        self.point_limit_s = point_limit_s
        self.finished_ttl_s = finished_ttl_s
        self.store = store
        self.send_drain = send_drain
        self.interval = max(0.05, float(interval))
        self.grace_s = grace_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="basin-reaper", daemon=True)

    def start(self) -> Reaper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _kinds(self) -> list[Any]:
        """The registered job kinds this reaper visits: runs always; the worker-held kinds
        (fits, ...) when it was given their grace (``fit_grace_s``)."""
        from service.jobs import WorkerJobKind, builtin_kinds, kinds

        builtin_kinds()
        return [k for k in kinds() if not isinstance(k, WorkerJobKind) or self.fit_grace_s is not None]

    def pass_once(self) -> dict[str, Any]:
        """One pass over every kind's jobs (what the thread runs each ``interval``)."""
        from service.jobs import ReapContext

        alive = alive_workers(self.client)
        out: dict[str, Any] = {}
        for kind in self._kinds():
            ctx = ReapContext(alive=alive, grace_s=self.fit_grace_s or 0.0, finished_ttl_s=self.finished_ttl_s,
                              store=self.store, send_drain=self.send_drain, point_limit_s=self.point_limit_s,
                              queued_grace_s=self.grace_s)
            out[kind.name] = kind.reap(self.client, ctx)
        return out

    def _loop(self) -> None:
        try:
            for kind in self._kinds():
                kind.seed(self.client)
        except redis.RedisError as e:
            logger.warning("reaper could not read the runs: %s", e)
        while not self._stop.wait(self.interval):
            try:
                self.pass_once()
            except redis.RedisError as e:  # Redis restarting: try again next pass
                logger.warning("reaper pass failed: %s", e)
            except Exception:
                logger.exception("reaper pass failed")


__all__ = ["RESCUE_PENDING_S", "ReapReport", "Reaper", "prune_expired", "reap", "seed_active"]
