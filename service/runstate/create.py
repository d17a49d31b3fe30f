"""Queue a run: store it and its todo list in Redis and send its drain tasks.

Shared by the API (``POST /api/runs``) and the fit worker (which queues the evaluations of
the line and the fitted curve when a fit ends); the spec must already be resolved to store
ids (``backend.app.runs.resolve_spec`` on the API side).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

import redis

from basin import grid, refine
from basin.spec import RunSpec
from service.runstate.keys import ACTIVE_KEY, RUNS_KEY, RunKeys
from service.runstate.reads import alive_workers
from service.tasks import send_drain

logger = logging.getLogger(__name__)


def point_order(spec: RunSpec) -> list[int]:
    """Flat indices coarse → fine (:func:`basin.grid.order_1d` / :func:`order_2d`); for an
    adaptive run, its coarse grid only (the first wave; the next ones are queued by the
    worker that finishes each wave, :func:`service.runstate.drain.finish_run`)."""
    if spec.refine is not None:
        return refine.first_wave(spec.shape, spec.refine.levels, spec.refine_required)
    if spec.is_1d:
        return grid.order_1d(spec.shape[0])
    nx, ny = spec.shape
    return grid.order_2d(nx, ny)


# ---- queueing -----------------------------------------------------------------------------


def create_run(
    r: redis.Redis,
    spec: RunSpec,
    *,
    redis_url: str,
    queue: str,
    names: dict[str, str] | None = None,
    tags: dict[str, dict[str, Any]] | None = None,
) -> str:
    """Store the run and its todo list in Redis and send the drain tasks; returns the id.

    The id is 16 random bytes (128 bits, URL-safe base64): a share link is a capability.
    Several ``basin.drain_run`` tasks are sent so several workers drain one run together.
    """
    run_id = secrets.token_urlsafe(16)
    k = RunKeys(run_id)
    order = point_order(spec)
    created = time.time()
    pipe = r.pipeline(transaction=True)
    pipe.hset(
        k.run,
        mapping={
            "spec": json.dumps(spec.model_dump(mode="json")),
            "status": "queued",
            "total": len(order),
            "done": 0,
            "created": repr(created),
            "evaluations": 0,
            "cached": 0,
            "names": json.dumps(names or {}),
            "tags": json.dumps(tags or {}),
        },
    )
    pipe.rpush(k.todo, *order)
    pipe.zadd(RUNS_KEY, {run_id: created})
    pipe.zadd(ACTIVE_KEY, {run_id: created})
    pipe.execute()
    workers = len(alive_workers(r))
    n_tasks = min(len(order), max(2, 2 * workers))
    send_drain(redis_url, queue, run_id, n_tasks)
    logger.info(
        "run %s queued: %s, %d points, %d tasks", run_id, spec.path.type, len(order), n_tasks
    )
    return run_id
