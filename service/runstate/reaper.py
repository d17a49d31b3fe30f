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
from typing import Any

import redis

from service.runstate.reads import alive_workers
from service.runstate.runs_reap import (  # re-exported: they lived here
    RESCUE_PENDING_S as RESCUE_PENDING_S,
)
from service.runstate.runs_reap import (
    ReapReport as ReapReport,
)
from service.runstate.runs_reap import (
    prune_expired as prune_expired,
)
from service.runstate.runs_reap import (
    reap as reap,
)
from service.runstate.runs_reap import (
    seed_active as seed_active,
)

logger = logging.getLogger(__name__)

class Reaper:
    """Runs :func:`reap` every ``interval`` seconds on a daemon thread until :meth:`stop`."""

    def __init__(self, client: redis.Redis, store: Any, send_drain: Callable[[str], None], *,
                 interval: float = 1.0, grace_s: float = 10.0, point_limit_s: float = 0.0,
                 finished_ttl_s: int | None = None, fit_grace_s: float | None = None,
                 send_job: Callable[[str, list[str]], None] | None = None):
        self.client = client
        self.fit_grace_s = fit_grace_s
        self.point_limit_s = point_limit_s
        self.finished_ttl_s = finished_ttl_s
        self.store = store
        self.send_drain = send_drain
        self.send_job = send_job  # a worker task sent again (a re-queued tune member)
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
                              queued_grace_s=self.grace_s,
                              send_job=self.send_job)
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
