"""The worker process's start and stop (Celery signals): torch, the heartbeat, the task state.

Kept apart from :mod:`workers.celery_app` (which only builds the app) so that the app does
not import the tasks that import it; Celery imports this module with the tasks
(``include``), before ``worker_init`` is sent.
"""

from __future__ import annotations

import logging
import os
import socket

from celery import signals

from service.settings import get_settings
from workers.celery_app import worker_device

logger = logging.getLogger(__name__)


@signals.worker_init.connect
def _on_worker_init(sender=None, **_):
    """Import torch and start the heartbeat in the worker process itself (solo pool)."""
    import redis
    import torch  # noqa: F401 - paid once here, not by the first task

    from workers import tasks
    from workers.leases import Heartbeat

    threads = int(os.environ.get("BASIN_TORCH_THREADS", "0") or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    settings = get_settings()
    device = worker_device(settings.worker_device)
    name = getattr(sender, "hostname", None) or f"worker@{socket.gethostname()}"
    client = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=30)
    tasks.STATE.start(
        client=client,
        name=name,
        device=device,
        settings=settings,
        heartbeat=Heartbeat(client, name, device, settings.lease_seconds).start(),
    )
    logger.info("basin worker %s ready on %s (lease %ss)", name, device, settings.lease_seconds)


@signals.worker_shutdown.connect
def _on_worker_shutdown(**_):
    from workers import tasks

    tasks.STATE.stop()
