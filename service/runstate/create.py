"""Queue a run: store it and its todo list in Redis and send its drain tasks.

Shared by the API (``POST /api/runs``) and the fit worker (which queues the evaluations of
the line and the fitted curve when a fit ends); the spec must already be resolved to store
ids (``backend.app.runs.resolve_spec`` on the API side).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from basin.spec import RunSpec
from service.jobs.limits import JobLimits
from service.runstate.order import point_order as point_order  # re-exported: it lived here

logger = logging.getLogger(__name__)

#: A run's ``priority`` field when background work (the demo's ready run) submitted it.
BACKGROUND = "background"


def person_waiting(r: redis.Redis, *, exclude: str | None = None) -> str | None:
    """The id of a run a person submitted (not ``background``) that is queued and that no
    worker has started, or None: a background run's worker yields to it between two points."""
    from service.runstate.keys import ACTIVE_KEY, RunKeys

    for rid in r.zrange(ACTIVE_KEY, 0, -1):
        rid = rid.decode() if isinstance(rid, bytes) else str(rid)
        if rid == exclude:
            continue
        status, priority = r.hmget(RunKeys(rid).run, "status", "priority")
        if isinstance(status, bytes):
            status = status.decode()
        if isinstance(priority, bytes):
            priority = priority.decode()
        if status == "queued" and priority != BACKGROUND:
            return rid
    return None


# ---- queueing -----------------------------------------------------------------------------


def create_run(
    r: redis.Redis,
    spec: RunSpec,
    *,
    redis_url: str,
    queue: str,
    names: dict[str, str] | None = None,
    tags: dict[str, dict[str, Any]] | None = None,
    limits: JobLimits | None = None,
    background: bool = False,
) -> str:
    """Store the run and its todo list in Redis and send the drain tasks; returns the id.

    Through the job kernel (:func:`service.jobs.create_job`, kind ``run``): the spec is
    checked against ``limits`` (default: this process's settings, ``BASIN_MAX_*``) first.
    The id is 16 random bytes (128 bits, URL-safe base64): a share link is a capability.
    Several ``basin.drain_run`` tasks are sent so several workers drain one run together.
    ``background``: the run yields its worker (between two points) to any run a person
    submitted that waits (``priority: background`` in its hash; :func:`person_waiting`).
    """
    from service.jobs import create_job
    from service.jobs.run import RUN

    if limits is None:
        from service.settings import get_settings

        limits = JobLimits.from_settings(get_settings())
    run_id = create_job(r, RUN, spec, limits=limits, redis_url=redis_url, queue=queue, names=names,
                        fields={"tags": json.dumps(tags or {}),
                                **({"priority": BACKGROUND} if background else {})})
    logger.info("run %s queued: %s, %s points", run_id, spec.path.type, r.hget(RUN.hash_key(run_id), "total"))
    return run_id
