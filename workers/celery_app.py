"""The Celery app: ``celery -A workers.celery_app worker --pool=solo -Q basin``.

Broker and result backend are ``Settings.redis_url``. One worker process per device
(``--pool=solo``; the device comes from ``BASIN_WORKER_DEVICE``): torch is imported
when the worker starts, never in a parent that forks (see STACK_NOTES — a forked
child that inherits torch's thread pool hangs). Tasks are acknowledged late and
fetched one at a time; the visibility timeout is far longer than any task, so a
slow task is never redelivered to a second worker while the first still runs, and
the tasks are idempotent anyway (the run's state lives in Redis, see
:mod:`service.runstate`).
"""

from __future__ import annotations

import logging

from service.settings import get_settings
from service.tasks import DRAIN_TASK, make_celery

logger = logging.getLogger(__name__)

_settings = get_settings()
app = make_celery(_settings.redis_url, _settings.task_queue, include=["workers.tasks", "workers.lifecycle"])
# Generous limits on one drain task (it drains a whole run). Celery enforces them only in
# pools with a parent process (prefork); with the solo pool Basin uses, the per-point limit
# (BASIN_POINT_TIME_LIMIT_S: the worker between batches, the reaper from Redis) and
# ``basin up``'s supervisor (kills a worker whose heartbeat stopped) bound a point instead.
app.conf.update(
    task_soft_time_limit=_settings.task_soft_time_limit_s or None,
    task_time_limit=_settings.task_time_limit_s or None,
)

__all__ = ["DRAIN_TASK", "app", "worker_device"]


def worker_device(setting: str) -> str:
    """``BASIN_WORKER_DEVICE``: ``auto`` → ``cuda`` when available, else ``cpu``."""
    import torch

    if setting and setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"
