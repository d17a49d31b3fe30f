"""The worker's heartbeat: announces the worker in Redis and keeps its lease alive.

A daemon thread refreshes ``basin:worker:<name>`` (JSON, with a TTL) and the worker's
entry in the live-worker set (:mod:`service.runstate.presence`) every ``interval`` seconds and pushes the deadline of the point the worker is evaluating
forward. A worker that dies (even by SIGKILL) stops both: its heartbeat expires, so
``/api/health`` stops listing it, and its lease expires, so another worker takes the
point. A live worker's lease never expires, however slow its point is, so no point
is evaluated twice while its worker is alive.

The heartbeat also names the run the worker is draining (``run``, set at once when a
drain starts, so the API can tell a run that is being worked on from an orphaned one)
and, while the worker finishes a run, renews its short-lived finish lock: a finisher
killed mid-way releases the lock within one TTL and another worker finishes the run.

A worker running a job of a worker-held kind (a curve fit, ...) announces it too
(``job``: ``"<kind>:<id>"``; a fit also as ``fit``) and each beat refreshes the job's
``beat`` (:func:`service.jobs.beat_job`): the API's reaper fails a running job that no
live worker announces once its ``beat`` is older than the grace period
(:meth:`service.jobs.WorkerJobKind.reap`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

import redis

from service.jobs import beat_job
from service.runstate import RunQueue, heartbeat_ttl
from service.runstate.presence import announce_worker, forget_worker

logger = logging.getLogger(__name__)


class Heartbeat:
    """Background refresher of one worker's presence and its current lease."""

    def __init__(self, client: redis.Redis, name: str, device: str, lease_seconds: float):
        self.r = client
        self.name = name
        self.device = device
        self.lease_seconds = float(lease_seconds)
        self.ttl = heartbeat_ttl(lease_seconds)
        self.interval = max(0.2, min(2.0, self.lease_seconds / 3, self.ttl / 3))
        self._current: tuple[RunQueue, tuple[int, ...]] | None = None
        self._run: str | None = None
        self._finishing: tuple[RunQueue, str] | None = None
        self._job: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="basin-heartbeat", daemon=True)
        self.started = time.time()

    def start(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        try:
            forget_worker(self.r, self.name)
        except redis.RedisError:
            pass

    def working_on(self, queue: RunQueue | None, index: int | None = None) -> None:
        """Tell the heartbeat which lease to keep alive (``None`` when idle)."""
        with self._lock:
            self._current = (queue, (index,)) if queue is not None and index is not None else None

    def working_on_all(self, queue: RunQueue, indices: list[int]) -> None:
        """Keep several leases alive (a multi-point pass); ``working_on(None)`` ends it."""
        with self._lock:
            self._current = (queue, tuple(indices)) if indices else None

    def draining(self, run_id: str | None) -> None:
        """Announce the run this worker drains now (``None`` when idle); beats at once."""
        with self._lock:
            self._run = run_id
        try:
            self.beat()
        except redis.RedisError as e:
            logger.warning("heartbeat failed: %s", e)

    def holding(self, kind: str | None, job_id: str | None = None) -> None:
        """Announce the job of a worker-held kind this worker runs now (``None`` when
        done); beats at once."""
        with self._lock:
            self._job = (kind, job_id) if kind is not None and job_id is not None else None
        try:
            self.beat()
        except redis.RedisError as e:
            logger.warning("heartbeat failed: %s", e)

    def fitting(self, fit_id: str | None) -> None:
        """Announce the fit this worker runs now (``None`` when done); beats at once."""
        with self._lock:
            self._job = ("fit", fit_id) if fit_id is not None else None
        try:
            self.beat()
        except redis.RedisError as e:
            logger.warning("heartbeat failed: %s", e)

    def finishing(self, queue: RunQueue | None, token: str | None = None) -> None:
        """Keep the finish lock ``token`` of ``queue``'s run alive (``None`` when done)."""
        with self._lock:
            self._finishing = (queue, token) if queue is not None and token else None

    def beat(self) -> None:
        with self._lock:
            cur, run, fin, job = self._current, self._run, self._finishing, self._job
        info = {
            "name": self.name,
            "device": self.device,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": self.started,
            "beat": time.time(),
            "run": run or (cur[0].keys.id if cur else None),
            "index": cur[1][0] if cur else None,
            "job": f"{job[0]}:{job[1]}" if job else None,
            "fit": job[1] if job and job[0] == "fit" else None,
        }
        announce_worker(self.r, self.name, info, self.ttl)
        if job is not None:
            beat_job(self.r, *job)
        if cur is not None:
            for index in cur[1]:
                cur[0].renew(index, self.lease_seconds)
        if fin is not None:
            fin[0].renew_finish(fin[1], self.ttl)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except redis.RedisError as e:  # Redis restarting: try again next beat
                logger.warning("heartbeat failed: %s", e)
