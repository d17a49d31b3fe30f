"""One reaper pass over the runs (:func:`reap`; what it repairs: :mod:`service.runstate.reaper`),
and the helpers the run kind uses (:func:`seed_active`). Below the job kernel: the run kind
(``service.jobs.run``) calls these, and the :class:`~service.runstate.reaper.Reaper` visits
every kind through the kernel."""

from __future__ import annotations

import logging
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
