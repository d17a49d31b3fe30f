"""The Celery task ``basin.drain_run``: a thin shell around :class:`basin.engine.Landscape`.

Several workers may drain one run at the same time (the API queues several tasks per
run). Each one loops::

    lease the next index (expired leases are requeued first)   ─ one Lua script
    cancelled / deleted?  → stop
    point cache hit?      → reuse the metrics, else evaluate on the live model
    record: SADD done ∧ XADD points, only when new             ─ one Lua script

and when the todo list and the leases are empty, the one worker that wins the
``final`` lock computes the summary, ends the run (``done``) and writes the result
document to the store. The lock lives a few seconds and the finisher's heartbeat renews
it; the other workers of the run wait while it is held, so if the finisher dies one of
them takes the lock once it expires (and when none is left, the API re-queues a task).
Bad input from the engine (:class:`basin.errors.BasinError`) fails the run with its
message; Redis outages are retried by Celery. Failed runs are written to the store too
(points so far, ``status: failed``, ``error``), like cancelled ones (by the API).

A worker with ``BASIN_API_URL`` set (no shared store volume) fetches the checkpoints and
datasets its store lacks from the API (:mod:`workers.fetch`) and leaves writing result
documents to the API, which stores an ended run on its next read of it (its own store
is the one that serves share links).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

import redis

from workers.celery_app import DRAIN_TASK, app
from workers.sinks import (
    TERMINAL,
    RunKeys,
    RunQueue,
    heartbeat_ttl,
    persist_run,
    pointcache_key,
    read_points,
    run_timings,
)

logger = logging.getLogger(__name__)


class WorkerState:
    """Per-process state set up at worker start: Redis client, name, device, caches."""

    def __init__(self) -> None:
        self.client: redis.Redis | None = None
        self.name = "worker"
        self.device = "cpu"
        self.settings: Any = None
        self.heartbeat: Any = None
        self.landscapes: Any = None

    def start(
        self, *, client: redis.Redis, name: str, device: str, settings: Any, heartbeat: Any
    ) -> None:
        from workers.cache import LandscapeCache

        self.client, self.name, self.device = client, name, device
        self.settings, self.heartbeat = settings, heartbeat
        self.landscapes = LandscapeCache(max_items=2, checkpoints=4)

    def ensure(self) -> None:
        """Set up lazily when the task runs outside a started worker (e.g. ``task.apply``)."""
        if self.client is not None:
            return
        from backend.app.core.config import get_settings
        from workers.celery_app import worker_device

        settings = get_settings()
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=30)
        self.start(
            client=client,
            name="inline",
            device=worker_device(settings.worker_device),
            settings=settings,
            heartbeat=None,
        )

    def stop(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.stop()
        if self.landscapes is not None:
            self.landscapes.clear()


STATE = WorkerState()


@app.task(
    name=DRAIN_TASK,
    bind=True,
    acks_late=True,
    max_retries=20,
    autoretry_for=(redis.ConnectionError, redis.TimeoutError),
    retry_backoff=2,
    retry_backoff_max=60,
)
def drain_run(self, run_id: str) -> dict:
    """Evaluate points of run ``run_id`` until none is left; idempotent (safe to run twice)."""
    STATE.ensure()
    try:
        return drain(run_id, STATE)
    finally:
        ask_api_to_store(STATE, run_id)


def ask_api_to_store(state: WorkerState, run_id: str) -> None:
    """A worker without the shared store cannot write the result document; reading the run
    through the API makes the API store it (``backend.app.runs._watch``), so a share link
    survives Redis even when nobody opened the run before it ended."""
    url = getattr(state.settings, "api_url", "") if state.settings is not None else ""
    if not url:
        return
    import httpx

    headers = {"X-Basin-Token": state.settings.api_token} if state.settings.api_token else {}
    try:
        httpx.get(f"{url.rstrip('/')}/api/runs/{run_id}", headers=headers, timeout=15)
    except httpx.HTTPError as e:
        logger.warning("could not ask %s to store run %s: %s", url, run_id, e)


def fail_run(
    client: redis.Redis, run_id: str, message: str, store: Any = None, *, token: str = ""
) -> bool:
    """Mark a run failed with ``message`` unless it already ended (atomic, :data:`END_LUA`);
    with a ``store``, write its document (points so far, the error). True when it failed it."""
    ended = RunQueue(client, run_id).end("failed", error=message, token=token)
    if not ended.ok:
        return False
    logger.warning("run %s failed: %s", run_id, message)
    if store is not None:
        persist_run(client, store, run_id)
    return True


def _documents(state: Any, store: Any) -> Any:
    """Where this worker writes result documents: its store, or nowhere (``None``) when it
    fetches from the API (``api_url``): the run stays ``persist: pending`` for the API."""
    return None if getattr(state.settings, "api_url", "") else store


def _step_tag(store: Any, ref: str) -> dict[str, int]:
    """``{"step": n}`` from the checkpoint's tags, so trajectories are labelled by training step."""
    try:
        step = (store.get_checkpoint(ref).get("tags") or {}).get("step")
    except Exception:  # an anchor that is not a store checkpoint has no tags
        return {}
    return {"step": step} if isinstance(step, int) else {}


def drain(run_id: str, state: WorkerState) -> dict:
    """The loop described in the module docstring; returns counts for the task result."""
    from basin.store import Store

    r = state.client
    assert r is not None
    k = RunKeys(run_id)
    raw = r.hget(k.run, "spec")
    if raw is None:
        logger.info("run %s no longer exists; nothing to do", run_id)
        return {"run": run_id, "evaluated": 0, "skipped": "gone"}
    if r.hget(k.run, "status") in TERMINAL:
        docs = _documents(state, Store(state.settings.store))
        if docs is not None and r.hget(k.run, "persist"):  # its writer died before storing it
            persist_run(r, docs, run_id)
        return {"run": run_id, "evaluated": 0, "skipped": "finished"}
    if state.heartbeat is not None:
        state.heartbeat.draining(run_id)  # first: the API must see the run is being drained
    r.delete(k.rescue)  # a task of this run is running: a later orphan may be rescued again
    try:
        return _drain(run_id, state, raw)
    finally:
        if state.heartbeat is not None:
            state.heartbeat.draining(None)


def _drain(run_id: str, state: WorkerState, raw: str) -> dict:
    from basin.errors import BasinError
    from basin.spec import RunSpec
    from basin.store import Store
    from workers.fetch import store_resolver

    r = state.client
    assert r is not None
    k = RunKeys(run_id)
    settings = state.settings
    store = Store(settings.store)
    docs = _documents(state, store)
    try:
        spec = RunSpec.model_validate(json.loads(raw))
        if spec.device == "auto" and state.device != "auto":
            spec = spec.model_copy(update={"device": state.device})
        land, load_s = state.landscapes.get(spec, store_resolver(store, settings))
    except BasinError as e:
        fail_run(r, run_id, str(e), docs)
        return {"run": run_id, "evaluated": 0, "error": str(e)}
    except Exception as e:  # a bug or a broken file: say so on the run rather than hang it
        logger.exception("opening run %s failed", run_id)
        fail_run(r, run_id, f"{type(e).__name__}: {e}", docs)
        return {"run": run_id, "evaluated": 0, "error": str(e)}
    names = json.loads(r.hget(k.run, "names") or "{}")
    # anchors carry the checkpoints as the user named them; ``id`` keeps the store id
    anchors = [
        {"name": names.get(a.name, a.name), "id": a.name, "coords": dict(a.coords),
         **_step_tag(store, a.name)}
        for a in land.anchors
    ]
    queue = RunQueue(r, run_id)
    queue.setup(anchors, state.device, load_s or 0.0)
    evaluated = reused = 0
    lease_s = float(settings.lease_seconds)
    while True:
        lease = queue.lease(lease_s)
        if lease.gone or lease.status:
            logger.info("run %s %s; stopping", run_id, "deleted" if lease.gone else lease.status)
            break
        if lease.index is None:
            if lease.leases_left:  # another worker holds the last points: wait for it
                time.sleep(min(max(lease.wait_s, 0.05), 0.5))  # (or for its lease to expire)
                continue
            outcome = finalize(r, run_id, land, docs, state)
            if outcome == "wait":  # another finisher holds the lock: it ends the run, or it
                time.sleep(0.25)  # died and its lock expires within seconds; then we finish
                continue
            break
        index = lease.index
        if state.heartbeat is not None:
            state.heartbeat.working_on(queue, index)
        try:
            point = land.point(index)
            key = land.point_key(point)
            cached = r.get(pointcache_key(key))
            if cached is not None:
                metrics, hit = json.loads(cached), True
            else:
                t0 = time.perf_counter()
                metrics = land.evaluate(point)
                dt, hit = time.perf_counter() - t0, False
                r.set(pointcache_key(key), json.dumps(metrics))
            rec = {"index": point.index, "coords": dict(point.coords), "metrics": metrics}
            outcome = queue.record(
                index, rec, worker=state.name, cached=hit, eval_s=0.0 if hit else dt
            )
        except BasinError as e:
            fail_run(r, run_id, str(e), docs)
            break
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # Celery retries; the lease expires and the point is requeued
        except Exception as e:
            logger.exception("point %s of run %s failed", index, run_id)
            fail_run(r, run_id, f"point {index}: {type(e).__name__}: {e}", docs)
            break
        finally:
            if state.heartbeat is not None:
                state.heartbeat.working_on(None)
        if outcome == 1:
            evaluated += not hit
            reused += hit
        elif outcome == 0:
            logger.warning("run %s point %s was already recorded (lease expired?)", run_id, index)
        else:
            logger.info("run %s ended while evaluating point %s", run_id, index)
            break
    return {"run": run_id, "evaluated": evaluated, "reused": reused}


def finalize(r: redis.Redis, run_id: str, land: Any, store: Any, state: Any = None) -> str:
    """Once every point is recorded: summary, status ``done``, result document in the store.

    Exactly one worker does it: the one that takes the finish lock (:data:`CLAIM_FINISH_LUA`,
    only when todo and leases are empty and every point is recorded). The lock expires
    after a few seconds unless this worker's heartbeat renews it, and ending the run
    (:data:`END_LUA`) requires still holding it. Returns ``"done"`` (this worker ended
    it), ``"wait"`` (another finisher holds the lock) or ``"over"`` (nothing to finish:
    ended, deleted, or points missing).
    """
    settings = getattr(state, "settings", None)
    ttl = heartbeat_ttl(float(getattr(settings, "lease_seconds", 30)))
    name = getattr(state, "name", "worker")
    heartbeat = getattr(state, "heartbeat", None)
    queue = RunQueue(r, run_id)
    token = f"{name}:{uuid.uuid4().hex}"
    got = queue.claim_finish(token, ttl)
    if got == 0:
        return "wait"
    if got < 0:
        return "over"
    if heartbeat is not None:
        heartbeat.finishing(queue, token)
    try:
        h = r.hgetall(RunKeys(run_id).run)
        points, _ = read_points(r, run_id)
        points.sort(key=lambda p: p["index"])
        summary = land.summary(points)
        finished = time.time()
        timings = run_timings(h, finished, len(points))
        ended = queue.end("done", finished=finished, summary=summary, timings=timings, token=token)
        if not ended.ok:
            logger.warning("run %s: lost the finish lock (%s); not ending it", run_id, ended.status)
            return "over"
        if store is not None:  # None: a worker without the store volume; the API stores it
            persist_run(r, store, run_id)
        logger.info("run %s done: %d points in %.1f s", run_id, len(points), timings["total_s"])
        return "done"
    except (redis.ConnectionError, redis.TimeoutError):
        raise  # Celery retries the task; the lock expires and the retry finishes the run
    except Exception as e:
        logger.exception("finishing run %s failed", run_id)
        fail_run(r, run_id, f"summary/result failed: {type(e).__name__}: {e}", store, token=token)
        return "over"
    finally:
        if heartbeat is not None:
            heartbeat.finishing(None)
