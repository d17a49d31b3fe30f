"""What the API and the workers agree on about Celery: task names, payloads, app settings.

The API only *sends* tasks (:func:`send_drain`, :func:`send_task`); the workers define them
(``workers/tasks.py``) under the same names. Both build their Celery app with
:func:`make_celery`, so broker options (late acks, one task at a time, a visibility
timeout longer than any task) are set in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from celery import Celery

#: Drain a run: lease, evaluate and record points until none is left. Payload: ``[run_id]``.
DRAIN_TASK = "basin.drain_run"
#: Fit a curve's control point, store it, queue the line and curve evaluations. Payload: ``[fit_id]``.
FIT_TASK = "basin.fit"
#: Execute a job of a worker-held kind (:class:`service.jobs.WorkerJobKind`) by its
#: kind's ``executor``. Payload: ``[kind, job_id]``.
JOB_TASK = "basin.job"
#: Longer than any task: a drain task runs until its run is finished.
VISIBILITY_TIMEOUT_S = 7 * 24 * 3600


def make_celery(redis_url: str, queue: str = "basin", include: Sequence[str] = ()) -> Celery:
    """A Celery app on ``redis_url`` routing :data:`DRAIN_TASK` to ``queue``."""
    app = Celery("basin", broker=redis_url, backend=redis_url, include=list(include))
    transport = {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    app.conf.update(
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_default_queue=queue,
        task_routes={DRAIN_TASK: {"queue": queue}, FIT_TASK: {"queue": queue}, JOB_TASK: {"queue": queue}},
        broker_transport_options=transport,
        result_backend_transport_options=transport,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_expires=3600,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=True,
        worker_send_task_events=False,
    )
    return app


@lru_cache(maxsize=4)
def _producer(redis_url: str, queue: str) -> Celery:
    return make_celery(redis_url, queue)


def send_drain(redis_url: str, queue: str, run_id: str, n: int = 1) -> None:
    """Queue ``n`` drain tasks for ``run_id`` (several workers may drain one run together)."""
    producer = _producer(redis_url, queue)
    for _ in range(n):
        producer.send_task(DRAIN_TASK, args=[run_id], queue=queue)


def send_task(redis_url: str, queue: str, name: str, args: list[str]) -> None:
    """Queue one task ``name`` with ``args`` (a job kind's task, :mod:`service.jobs`)."""
    _producer(redis_url, queue).send_task(name, args=args, queue=queue)


def send_fit(redis_url: str, queue: str, fit_id: str) -> None:
    """Queue the one task that runs fit ``fit_id`` (:mod:`service.jobs.fit`)."""
    send_task(redis_url, queue, FIT_TASK, [fit_id])
