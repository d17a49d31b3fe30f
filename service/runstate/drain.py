"""How a worker drains a run: the drive loop's source, sink and cache over the run state.

- :class:`LeaseSource` leases the next index (expired leases are requeued first); when
  the todo list is empty but other workers still hold leases it waits for them (or for
  their leases to expire); it ends when the run is finished, cancelled or deleted.
- :class:`StreamSink` records each point once (``record.lua``): new, duplicate, or the
  run ended under it.
- :class:`RedisPointCache` is the cross-run point cache (``pointcache:<key>``).
- :func:`finish_run`: once every point is recorded, exactly one worker takes the finish
  lock, computes the summary, ends the run ``done`` and writes the result document.
- :func:`fail_run`: a run that cannot go on is ended ``failed`` with its message.

Each works on any queue with :class:`service.runstate.RunQueue`'s interface — the Redis
one, or :class:`service.runstate.memory.MemoryRunQueue` in unit tests.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

import redis

from basin import strict_json
from basin.drive import Outcome
from basin.status import is_terminal
from service.runstate.keys import pointcache_key
from service.runstate.queue import Ended, Lease
from service.runstate.reads import heartbeat_ttl, run_timings

logger = logging.getLogger(__name__)


class Queue(Protocol):
    """The run-state protocol of one run (:class:`RunQueue`, :class:`MemoryRunQueue`)."""

    @property
    def run_id(self) -> str: ...

    def lease(self, seconds: float) -> Lease: ...

    def record(self, index: int, point: dict[str, Any], *, worker: str, cached: bool,
               eval_s: float = 0.0) -> int: ...

    def renew(self, index: int, seconds: float) -> bool: ...

    def begin(self, index: int, reset_after_s: float = 0.0) -> bool: ...

    def claim_finish(self, token: str, ttl_s: float) -> int: ...

    def renew_finish(self, token: str, ttl_s: float) -> bool: ...

    def extend(self, indices: list[int], token: str) -> int: ...

    def end(self, status: str, *, finished: float | None = None, error: str | None = None,
            summary: Any = None, timings: Any = None, token: str = "") -> Ended: ...

    def info(self) -> dict[str, str]: ...

    def points(self) -> list[dict[str, Any]]: ...


class Heartbeat(Protocol):
    """What the worker's heartbeat keeps alive (``workers/leases.py``)."""

    def working_on(self, queue: Any, index: int | None = None) -> None: ...

    def working_on_all(self, queue: Any, indices: list[int]) -> None: ...

    def finishing(self, queue: Any, token: str | None = None) -> None: ...


#: See :class:`LeaseSource`: how much older than the per-point limit a first-lease time
#: must be before a new lease starts it again.
BEGIN_RESET_MARGIN_S = 60.0


class LeaseSource:
    """Points of a run, one lease at a time. After ``next()`` returns ``None``, ``over``
    says why: a terminal status or ``"deleted"`` (stop), or ``None`` (nothing left to
    lease: the run may be finished)."""

    def __init__(
        self,
        queue: Queue,
        point: Callable[[int], Any],
        *,
        lease_s: float,
        heartbeat: Heartbeat | None = None,
        sleep: Callable[[float], None] = time.sleep,
        point_limit_s: float = 0.0,
        yield_to: Callable[[], bool] | None = None,
    ):
        self.queue = queue
        # background work: before each point, ask whether a person's run waits; if so stop
        # (``over = "yielded"``) and leave the rest of the run queued
        self.yield_to = yield_to
        # a first-lease time older than the limit plus a minute is from a service that was
        # down (nobody watched it): it starts again (``lua/begin.lua``)
        self.begin_reset_s = float(point_limit_s) + BEGIN_RESET_MARGIN_S if point_limit_s else 0.0
        self.point = point
        self.lease_s = float(lease_s)
        self.heartbeat = heartbeat
        self.sleep = sleep
        self.over: str | None = None
        self.current: int | None = None  # the index in hand (named when a point fails)

    def next(self) -> Any | None:
        if self.yield_to is not None and self.yield_to():
            self.over = "yielded"
            logger.info("run %s yields its worker to a run a person submitted", self.queue.run_id)
            return None
        while True:
            lease = self.queue.lease(self.lease_s)
            if lease.gone or lease.status:
                self.over = "deleted" if lease.gone else lease.status
                logger.info("run %s %s; stopping", self.queue.run_id, self.over)
                return None
            if lease.index is None:
                if lease.leases_left:  # another worker holds the last points: wait for it
                    self.sleep(min(max(lease.wait_s, 0.05), 0.5))  # (or for its lease to expire)
                    continue
                return None
            if self.heartbeat is not None:
                self.heartbeat.working_on(self.queue, lease.index)
            self.queue.begin(lease.index, self.begin_reset_s)  # for the reaper's time limit
            self.current = lease.index
            return self.point(lease.index)

    def take(self, n: int) -> list[Any]:
        """Up to ``n`` leased points for one multi-point pass (:func:`basin.drive.drive` with
        ``points_per_pass > 1``): the first as :meth:`next` gets it (waiting while other workers
        hold the last leases), the others only while more are leasable at once; the heartbeat
        renews every lease of the group until its points are recorded."""
        first = self.next()
        if first is None:
            return []
        got = [first]
        while len(got) < n:
            lease = self.queue.lease(self.lease_s)
            if lease.gone or lease.status or lease.index is None:
                break  # ended, or nothing more at once: the next take() says why
            self.queue.begin(lease.index, self.begin_reset_s)
            got.append(self.point(lease.index))
        if self.heartbeat is not None and len(got) > 1:
            self.heartbeat.working_on_all(self.queue, [p.index for p in got])
        return got

    def release(self, point: Any) -> None:
        """Stop renewing the lease: it expires and another worker takes the point."""
        if self.heartbeat is not None:
            self.heartbeat.working_on(None)


class StreamSink:
    """Records points into the run (exactly once per index)."""

    def __init__(self, queue: Queue, *, worker: str, heartbeat: Heartbeat | None = None):
        self.queue = queue
        self.worker = worker
        self.heartbeat = heartbeat

    def put(self, record: dict[str, Any], *, cached: bool, eval_s: float) -> Outcome:
        try:
            code = self.queue.record(record["index"], record, worker=self.worker, cached=cached,
                                     eval_s=eval_s)
        finally:
            if self.heartbeat is not None:
                self.heartbeat.working_on(None)
        if code == 1:
            return "new"
        if code == 0:
            logger.warning("run %s point %s was already recorded (lease expired?)",
                           self.queue.run_id, record["index"])
            return "duplicate"
        logger.info("run %s ended while evaluating point %s", self.queue.run_id, record["index"])
        return "ended"


class StopFlag:
    """``should_stop()`` for :func:`basin.drive.drive`: True once the run ended or was
    deleted (cancel). Asked between batches, so it reads Redis at most every ``every_s``."""

    def __init__(self, queue: Queue, *, every_s: float = 0.2,
                 clock: Callable[[], float] = time.monotonic):
        self.queue = queue
        self.every_s = every_s
        self.clock = clock
        self._next = 0.0
        self.stopped = False

    def __call__(self) -> bool:
        if self.stopped:
            return True
        now = self.clock()
        if now < self._next:
            return False
        self._next = now + self.every_s
        status = self.queue.info().get("status")
        self.stopped = status is None or is_terminal(status)
        return self.stopped


class RedisPointCache:
    """Measured points (``{metrics, ensemble?, samples?}``) by :meth:`basin.engine.Landscape.point_key`,
    shared by every run and worker;
    each entry expires ``ttl_s`` seconds after it was written (``None``/0: never)."""

    def __init__(self, client: redis.Redis, ttl_s: int | None = None):
        self.r = client
        self.ttl_s = int(ttl_s) if ttl_s and ttl_s > 0 else None  # None: never expires

    def get(self, key: str) -> dict[str, Any] | None:
        raw = self.r.get(pointcache_key(key))
        return json.loads(raw) if raw is not None else None

    def set(self, key: str, measured: dict[str, Any]) -> None:
        self.r.set(pointcache_key(key), strict_json.dumps(measured), ex=self.ttl_s)


def fail_run(queue: Queue, message: str, persist: Callable[[], Any] | None = None, *,
             token: str = "") -> bool:
    """End the run ``failed`` with ``message`` unless it already ended (``end.lua``); then
    write its document (points so far, the error) with ``persist``. True when it failed it."""
    ended = queue.end("failed", error=message, token=token)
    if not ended.ok:
        return False
    logger.warning("run %s failed: %s", queue.run_id, message)
    if persist is not None:
        persist()
    return True


def finish_run(
    queue: Queue,
    summarize: Callable[[list[dict[str, Any]]], dict[str, Any]],
    persist: Callable[[], Any] | None = None,
    *,
    worker: str = "worker",
    lease_s: float = 30.0,
    heartbeat: Heartbeat | None = None,
    refine: Callable[[list[dict[str, Any]]], list[int]] | None = None,
) -> str:
    """Once every point is recorded: summary, status ``done``, result document.

    Exactly one worker does it: the one that takes the finish lock (only when todo and
    leases are empty and every point is recorded). The lock expires after a few seconds
    unless the heartbeat renews it, and ending the run requires still holding it.
    Returns ``"done"`` (this worker ended it), ``"wait"`` (another finisher holds the
    lock), ``"more"`` (there are points to evaluate: this worker queued an adaptive run's
    next wave, or another one did) or ``"over"`` (nothing to finish: ended, deleted, or
    points missing).

    ``refine(points)`` (adaptive runs, :func:`basin.refine.next_wave`) chooses the next
    wave from every point recorded so far; while it returns indices, the lock holder
    queues them and releases the lock (``extend.lua``) instead of ending the run — one
    worker decides each wave, from the whole previous one.
    """
    token = f"{worker}:{uuid.uuid4().hex}"
    got = queue.claim_finish(token, heartbeat_ttl(lease_s))
    if got == 0:
        return "wait"
    if got == -3:
        return "more"  # points were queued after this worker's last lease (a new wave)
    if got < 0:
        return "over"
    if heartbeat is not None:
        heartbeat.finishing(queue, token)
    try:
        h = queue.info()
        points = queue.points()
        wave = refine(points) if refine is not None else []
        if wave:
            queued = queue.extend(wave, token)
            logger.info("run %s: %s next wave of %d points", queue.run_id,
                        "queued the" if queued == 1 else f"could not queue ({queued}) the", len(wave))
            return "more" if queued == 1 else "over"
        summary = summarize(points)
        finished = time.time()
        timings = run_timings(h, finished, len(points))
        ended = queue.end("done", finished=finished, summary=summary, timings=timings, token=token)
        if not ended.ok:
            logger.warning("run %s: lost the finish lock (%s); not ending it", queue.run_id,
                           ended.status)
            return "over"
        if persist is not None:
            persist()
        logger.info("run %s done: %d points in %.1f s", queue.run_id, len(points),
                    timings["total_s"])
        return "done"
    except (redis.ConnectionError, redis.TimeoutError):
        raise  # Celery retries the task; the lock expires and the retry finishes the run
    except Exception as e:
        logger.exception("finishing run %s failed", queue.run_id)
        fail_run(queue, f"summary/result failed: {type(e).__name__}: {e}", persist, token=token)
        return "over"
    finally:
        if heartbeat is not None:
            heartbeat.finishing(None)


def fail_overdue(queue: Queue, limit_s: float, persist: Callable[[], Any] | None = None) -> bool:
    """Fail the run when a point held by a worker right now was first leased more than
    ``limit_s`` ago (the reaper's check: it holds when the point's worker is wedged, e.g.
    its code holds the GIL and cannot check the limit itself, and when every worker that
    takes the point wedges). True when it failed the run."""
    overdue = getattr(queue, "overdue", None)
    if not limit_s or limit_s <= 0 or overdue is None:
        return False
    late = overdue(limit_s)
    if late is None:
        return False
    from basin.drive import PointTimeLimit

    return fail_run(queue, str(PointTimeLimit(late[0], limit_s)), persist)


__all__ = ["LeaseSource", "RedisPointCache", "StopFlag", "StreamSink", "fail_overdue",
           "fail_run", "finish_run"]
