"""The Celery task ``basin.drain_run``: deserialise, drive, finish.

Several workers may drain one run at the same time (the API queues several tasks per
run). Each opens the run's :class:`basin.engine.Landscape` (kept open across tasks by
:class:`workers.cache.LandscapeCache`) and runs the core's one loop,
:func:`basin.drive.drive`, over leased points (:mod:`service.runstate.drain`): lease →
point cache or evaluate → record once. When nothing is left to lease, the one worker
that wins the finish lock computes the summary, ends the run ``done`` and writes the
result document. Bad input from the engine (:class:`basin.errors.BasinError`) fails the
run with its message; Redis outages are retried by Celery.

A worker with ``BASIN_API_URL`` set (no shared store volume) fetches the checkpoints and
datasets its store lacks from the API (:mod:`workers.fetch`) and leaves writing result
documents to the API's reaper, which stores every ended run (its own store is the one
that serves share links).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import redis

from basin.drive import drive
from service.documents import persist_run
from service.runstate import TERMINAL, RunKeys, RunQueue
from service.runstate.create import BACKGROUND, person_waiting
from service.runstate.drain import (
    LeaseSource,
    RedisPointCache,
    StopFlag,
    StreamSink,
    fail_run,
    finish_run,
)
from service.tasks import FIT_TASK, JOB_TASK, send_drain
from workers.celery_app import DRAIN_TASK, app

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
        cache_bytes = getattr(settings, "worker_cache_bytes", None)
        self.landscapes = (LandscapeCache(max_items=2) if cache_bytes is None
                           else LandscapeCache(max_items=2, checkpoint_bytes=int(cache_bytes)))

    def ensure(self) -> None:
        """Set up lazily when the task runs outside a started worker (e.g. ``task.apply``)."""
        if self.client is not None:
            return
        from service.settings import get_settings
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
    return drain(run_id, STATE)


def _persister(state: WorkerState, store: Any, run_id: str):
    """Writes the run's document to this worker's store, or ``None`` when the worker has no
    shared store (``api_url``): the run stays ``persist: pending`` for the API's reaper."""
    if getattr(state.settings, "api_url", ""):
        return None
    client = state.client
    if client is None:  # drain() runs after STATE.ensure()
        raise RuntimeError("the worker's Redis client is not set up")
    ttl_s = getattr(state.settings, "finished_run_ttl_s", None)
    return lambda: persist_run(client, store, run_id, ttl_s=ttl_s)


def _hook() -> Callable[..., Any] | None:
    """The test seam ``BASIN_WORKER_HOOK="module:function"`` (unset in production).

    The worker calls ``function(event, run_id, index, worker)`` at the moments a test must
    catch it at: ``"point"`` when it starts a leased point (``index``, lease held),
    ``"finish"`` when it holds the finish lock before the summary (``index`` None) and
    ``"persist"`` after the run ended ``done``, before its document is written. The hook may
    block (the heartbeat keeps leases and the finish lock alive) so that the reliability
    tests can kill a worker at an exact moment instead of racing a clock."""
    spec = os.environ.get("BASIN_WORKER_HOOK", "").strip()
    if not spec:
        return None
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _hooked(hook: Callable[..., Any] | None, event: str, run_id: str, worker: str,
            fn: Callable[..., Any] | None, *, indexed: bool = False) -> Any:
    """``fn`` with ``hook(event, ...)`` called first (``fn`` itself when there is no hook)."""
    if hook is None or fn is None:
        return fn
    call = fn

    def wrapped(*args: Any, **kw: Any) -> Any:
        hook(event, run_id, args[0] if indexed else None, worker)
        return call(*args, **kw)

    return wrapped


def _step_tag(store: Any, ref: str) -> dict[str, int]:
    """``{"step": n}`` from the checkpoint's tags, so trajectories are labelled by training step."""
    try:
        step = (store.get_checkpoint(ref).get("tags") or {}).get("step")
    except Exception:  # an anchor that is not a store checkpoint has no tags
        return {}
    return {"step": step} if isinstance(step, int) else {}


def _named_failure(r: Any, run_id: str, queue: Any, persist: Any):
    """``fail_run`` whose message names the run's checkpoints instead of their 64-hex ids."""
    from basin.names import name_ids

    names = json.loads(r.hget(RunKeys(run_id).run, "names") or "{}")

    def fail(message: str) -> bool:
        return fail_run(queue, name_ids(message, names), persist)

    return fail


def drain(run_id: str, state: WorkerState) -> dict:
    """Deserialise the run, drive the loop over leased points, finish the run."""
    from basin.errors import BasinError
    from basin.spec import RunSpec
    from service.store import Store
    from workers.fetch import store_resolver

    r = state.client
    assert r is not None
    raw = r.hget(RunKeys(run_id).run, "spec")
    if raw is None:
        logger.info("run %s no longer exists; nothing to do", run_id)
        return {"run": run_id, "evaluated": 0, "skipped": "gone"}
    store = Store(state.settings.store)
    hook = _hook()
    persist = _hooked(hook, "persist", run_id, state.name, _persister(state, store, run_id))
    queue = RunQueue(r, run_id)
    fail = _named_failure(r, run_id, queue, persist)
    if r.hget(RunKeys(run_id).run, "status") in TERMINAL:
        if persist is not None and r.hget(RunKeys(run_id).run, "persist"):
            persist()  # its writer died before storing it
        return {"run": run_id, "evaluated": 0, "skipped": "finished"}
    background = r.hget(RunKeys(run_id).run, "priority") == BACKGROUND
    if background and person_waiting(r, exclude=run_id) is not None:  # before loading anything
        time.sleep(0.5)  # (no busy loop if the waiting run's own task is slow to arrive)
        send_drain(state.settings.redis_url, state.settings.task_queue, run_id)
        return {"run": run_id, "evaluated": 0, "yielded": True}
    hb = state.heartbeat
    if hb is not None:
        hb.draining(run_id)  # first: the reaper must see the run is being drained
    queue.clear_rescue()
    try:
        try:
            spec = RunSpec.model_validate(json.loads(raw))
            if spec.device == "auto" and state.device != "auto":
                spec = spec.model_copy(update={"device": state.device})
            land, load_s = state.landscapes.get(spec, store_resolver(store, state.settings))
        except BasinError as e:
            fail(str(e))
            return {"run": run_id, "evaluated": 0, "error": str(e)}
        except Exception as e:  # a bug or a broken file: say so on the run rather than hang it
            logger.exception("opening run %s failed", run_id)
            fail(f"{type(e).__name__}: {e}")
            return {"run": run_id, "evaluated": 0, "error": str(e)}
        names = json.loads(r.hget(RunKeys(run_id).run, "names") or "{}")
        # anchors carry the checkpoints as the user named them; ``id`` keeps the store id
        anchors = [
            {"name": names.get(a.name, a.name), "id": a.name, "coords": dict(a.coords),
             **_step_tag(store, a.name)}
            for a in land.anchors
        ]
        queue.setup(anchors, state.device, load_s or 0.0)
        lease_s = float(state.settings.lease_seconds)
        point = _hooked(hook, "point", run_id, state.name, land.point, indexed=True)
        summary = _hooked(hook, "finish", run_id, state.name, land.summary)
        refine = land.next_wave if spec.refine is not None else None
        limit_s = float(getattr(state.settings, "point_time_limit_s", 0) or 0) or None
        source = LeaseSource(queue, point, lease_s=lease_s, heartbeat=hb,
                             point_limit_s=limit_s or 0.0,
                             yield_to=(lambda: person_waiting(r, exclude=run_id) is not None)
                             if background else None)
        sink = StreamSink(queue, worker=state.name, heartbeat=hb)
        cache = RedisPointCache(r, getattr(state.settings, "point_cache_ttl_s", None))
        evaluated = reused = 0
        while True:
            try:
                stats = drive(land, source, sink, cache=cache, should_stop=StopFlag(queue),
                              point_time_limit_s=limit_s)
            except (redis.ConnectionError, redis.TimeoutError):
                raise  # Celery retries; the lease expires and the point is requeued
            except BasinError as e:
                fail(str(e))
                break
            except Exception as e:  # a bug or a broken file: say so on the run rather than hang it
                logger.exception("point %s of run %s failed", source.current, run_id)
                fail(f"point {source.current}: {type(e).__name__}: {e}")
                break
            evaluated += stats.evaluated
            reused += stats.reused
            if stats.interrupted is not None:
                logger.info("run %s ended; stopped within point %s", run_id, stats.interrupted)
            if source.over is not None or stats.stopped != "exhausted":
                break
            outcome = finish_run(queue, summary, persist, worker=state.name,
                                 lease_s=lease_s, heartbeat=hb, refine=refine)
            if outcome == "more":  # an adaptive run's next wave is queued: drain it too
                continue
            if outcome != "wait":
                break
            # another finisher holds the lock: it ends the run, or it died and its lock
            # expires within seconds; then this worker finishes it
            time.sleep(0.25)
        from service.jobs.study import after_run

        after_run(r, run_id, redis_url=state.settings.redis_url, queue=state.settings.task_queue, store=store)
        if source.over == "yielded":  # its turn again after the waiting run's drain task
            send_drain(state.settings.redis_url, state.settings.task_queue, run_id)
        return {"run": run_id, "evaluated": evaluated, "reused": reused, "yielded": source.over == "yielded"}
    finally:
        if hb is not None:
            hb.draining(None)


@app.task(
    name=FIT_TASK,
    bind=True,
    acks_late=True,
    max_retries=5,
    autoretry_for=(redis.ConnectionError, redis.TimeoutError),
    retry_backoff=2,
    retry_backoff_max=60,
)
def fit_curve(self, fit_id: str) -> dict:
    """Fit a curve's control point (:mod:`workers.fitjob`); one worker runs the whole fit."""
    from workers.fitjob import run_fit

    STATE.ensure()
    return run_fit(fit_id, STATE)


@app.task(
    name=JOB_TASK,
    bind=True,
    acks_late=True,
    max_retries=5,
    autoretry_for=(redis.ConnectionError, redis.TimeoutError),
    retry_backoff=2,
    retry_backoff_max=60,
)
def run_job_task(self, kind: str, job_id: str) -> dict:
    """Run a job of a worker-held kind (:mod:`service.jobs`) by its kind's executor."""
    from workers.jobs import run_job

    STATE.ensure()
    return run_job(kind, job_id, STATE)
