"""The Celery task ``basin.drain_run``: a thin shell around :class:`basin.engine.Landscape`.

Several workers may drain one run at the same time (the API queues several tasks per
run). Each one loops::

    lease the next index (expired leases are requeued first)   ─ one Lua script
    cancelled / deleted?  → stop
    point cache hit?      → reuse the metrics, else evaluate on the live model
    record: SADD done ∧ XADD points, only when new             ─ one Lua script

and when the todo list and the leases are empty, the one worker that wins the
``final`` lock computes the summary and writes the result document to the store.
Bad input from the engine (:class:`basin.errors.BasinError`) fails the run with its
message; Redis outages are retried by Celery.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis

from workers.celery_app import DRAIN_TASK, app
from workers.sinks import RunKeys, RunQueue, pointcache_key, read_points

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
    return drain(run_id, STATE)


def fail_run(client: redis.Redis, run_id: str, message: str) -> None:
    """Mark a run failed with ``message`` unless it already ended."""
    k = RunKeys(run_id)
    status = client.hget(k.run, "status")
    if status is None or status in ("done", "failed", "cancelled"):
        return
    client.hset(
        k.run, mapping={"status": "failed", "error": message, "finished": repr(time.time())}
    )
    client.delete(k.todo)
    logger.warning("run %s failed: %s", run_id, message)


def drain(run_id: str, state: WorkerState) -> dict:
    """The loop described in the module docstring; returns counts for the task result."""
    from basin.errors import BasinError
    from basin.spec import RunSpec
    from basin.store import Store

    r = state.client
    assert r is not None
    k = RunKeys(run_id)
    raw = r.hget(k.run, "spec")
    if raw is None:
        logger.info("run %s no longer exists; nothing to do", run_id)
        return {"run": run_id, "evaluated": 0, "skipped": "gone"}
    if r.hget(k.run, "status") in ("done", "failed", "cancelled"):
        return {"run": run_id, "evaluated": 0, "skipped": "finished"}
    settings = state.settings
    store = Store(settings.store)
    try:
        spec = RunSpec.model_validate(json.loads(raw))
        if spec.device == "auto" and state.device != "auto":
            spec = spec.model_copy(update={"device": state.device})
        land, load_s = state.landscapes.get(spec, store.resolver())
    except BasinError as e:
        fail_run(r, run_id, str(e))
        return {"run": run_id, "evaluated": 0, "error": str(e)}
    except Exception as e:  # a bug or a broken file: say so on the run rather than hang it
        logger.exception("opening run %s failed", run_id)
        fail_run(r, run_id, f"{type(e).__name__}: {e}")
        return {"run": run_id, "evaluated": 0, "error": str(e)}
    names = json.loads(r.hget(k.run, "names") or "{}")
    # anchors carry the checkpoints as the user named them; ``id`` keeps the store id
    anchors = [
        {"name": names.get(a.name, a.name), "id": a.name, "coords": dict(a.coords)}
        for a in land.anchors
    ]
    if r.hexists(k.run, "spec"):
        pipe = r.pipeline()
        pipe.hsetnx(k.run, "anchors", json.dumps(anchors))
        pipe.hsetnx(k.run, "device", state.device)
        if load_s:
            pipe.hincrbyfloat(k.run, "load_s", load_s)
        pipe.execute()

    queue = RunQueue(r, run_id)
    evaluated = reused = 0
    lease_s = float(settings.lease_seconds)
    while True:
        lease = queue.lease(lease_s)
        if lease.gone or lease.status:
            logger.info("run %s %s; stopping", run_id, "deleted" if lease.gone else lease.status)
            break
        if lease.index is None:
            if (
                lease.leases_left
            ):  # another worker holds the last points: wait for it (or its expiry)
                time.sleep(min(max(lease.wait_s, 0.05), 0.5))
                continue
            finalize(r, run_id, land, store)
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
            fail_run(r, run_id, str(e))
            break
        except (redis.ConnectionError, redis.TimeoutError):
            raise  # Celery retries; the lease expires and the point is requeued
        except Exception as e:
            logger.exception("point %s of run %s failed", index, run_id)
            fail_run(r, run_id, f"point {index}: {type(e).__name__}: {e}")
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


def finalize(r: redis.Redis, run_id: str, land: Any, store: Any) -> bool:
    """Once every point is recorded: summary, anchors, result document, status ``done``.

    Exactly one worker does it (``SET final NX``); returns True for that worker.
    """
    k = RunKeys(run_id)
    h = r.hgetall(k.run)
    if "spec" not in h or h.get("status") in ("done", "failed", "cancelled"):
        return False
    total = int(h.get("total", 0))
    if r.scard(k.done) < total:
        return False  # cancelled or deleted meanwhile; nothing to finish
    if not r.set(k.final, r.hget(k.run, "device") or "?", nx=True, ex=600):
        return False
    try:
        points, _ = read_points(r, run_id)
        points.sort(key=lambda p: p["index"])
        summary = land.summary(points)
        anchors = json.loads(h.get("anchors") or "[]")
        finished = time.time()
        started = float(h.get("started") or h.get("created") or finished)
        total_s = max(finished - started, 1e-9)
        doc = {
            "id": run_id,
            "spec": json.loads(h["spec"]),
            "points": points,
            "anchors": anchors,
            "names": json.loads(h.get("names") or "{}"),
            "summary": summary,
            "timings": {
                "load_s": round(float(h.get("load_s") or 0.0), 4),
                "eval_s": round(float(h.get("eval_s") or 0.0), 4),
                "total_s": round(total_s, 4),
                "points_per_s": round(len(points) / total_s, 4),
                "device": h.get("device") or "cpu",
                "evaluations": int(h.get("evaluations") or 0),
                "cached_points": int(h.get("cached") or 0),
            },
            "status": "done",
            "created": float(h.get("created") or started),
            "finished": finished,
        }
        store.save_run(run_id, doc)
        r.hset(
            k.run,
            mapping={
                "status": "done",
                "finished": repr(finished),
                "summary": json.dumps(summary),
                "timings": json.dumps(doc["timings"]),
            },
        )
        logger.info("run %s done: %d points in %.1f s", run_id, len(points), total_s)
        return True
    except Exception as e:
        logger.exception("finishing run %s failed", run_id)
        fail_run(r, run_id, f"summary/result failed: {type(e).__name__}: {e}")
        return False
