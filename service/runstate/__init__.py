"""The run-state protocol between the API and the workers, kept in Redis.

- :mod:`~service.runstate.keys` — the key layout;
- :mod:`~service.runstate.queue` — :class:`RunQueue`, the atomic steps (Lua scripts in
  ``lua/``): lease, record, renew, finish lock, end, rescue;
- :mod:`~service.runstate.memory` — the same protocol in memory, for unit tests;
- :mod:`~service.runstate.reads` — points, timings;
- :mod:`~service.runstate.presence` — the live workers (one sorted set the heartbeats keep);
- :mod:`~service.runstate.reaper` — the periodic pass that rescues orphaned runs and
  stores ended ones (reads never change state).
"""

from __future__ import annotations

from service.runstate.keys import (
    ACTIVE_KEY,
    PREFIX,
    RUNS_KEY,
    TERMINAL,
    WORKER_PREFIX,
    WORKERS_KEY,
    RunKeys,
    pointcache_key,
    worker_key,
)
from service.runstate.queue import Ended, Lease, RunQueue
from service.runstate.reads import alive_workers, heartbeat_ttl, json_or, read_points, run_timings

__all__ = [
    "ACTIVE_KEY",
    "PREFIX",
    "RUNS_KEY",
    "TERMINAL",
    "WORKERS_KEY",
    "WORKER_PREFIX",
    "Ended",
    "Lease",
    "RunKeys",
    "RunQueue",
    "alive_workers",
    "heartbeat_ttl",
    "json_or",
    "pointcache_key",
    "read_points",
    "run_timings",
    "worker_key",
]
