"""Which workers are alive: one sorted set the heartbeats keep, read without a SCAN.

Each heartbeat writes the worker's JSON under ``worker:<name>`` with a TTL (it expires
unless refreshed: a dead worker drops out within one TTL) and, in the same round trip,
its name into the ``workers`` sorted set (name → last beat, unix seconds), trimming
names not seen for :data:`FORGET_S` seconds. A reader (which writes nothing) takes the
recent names, then reads their heartbeats with one ``MGET``: an expired one is absent. Reads cost two round
trips whatever else the keyspace holds (every cached point, for days), instead of a
``SCAN`` over all of it.
"""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

from service.runstate.keys import WORKERS_KEY, worker_key

#: A name whose last beat is this old leaves the set (its heartbeat expired long before:
#: TTLs are 3-30 s). Generous, so that a worker whose clock is behind is never dropped
#: while alive — liveness itself is the heartbeat key's TTL, kept by Redis.
FORGET_S = 300.0


def heartbeat_ttl(lease_seconds: float) -> int:
    """How long a worker's heartbeat key lives without a refresh (seconds)."""
    return int(max(3, min(30, lease_seconds)))


def announce_worker(client: redis.Redis, name: str, info: dict[str, Any], ttl_s: int) -> None:
    """One beat: the heartbeat JSON (expiring after ``ttl_s``) and the name in the live set."""
    pipe = client.pipeline(transaction=True)
    pipe.set(worker_key(name), json.dumps(info), ex=int(ttl_s))
    now = time.time()
    pipe.zadd(WORKERS_KEY, {name: now})
    pipe.zremrangebyscore(WORKERS_KEY, "-inf", now - FORGET_S)  # trimmed by the writers
    pipe.execute()


def forget_worker(client: redis.Redis, name: str) -> None:
    """A worker stopping cleanly: its heartbeat and its entry go at once."""
    pipe = client.pipeline(transaction=True)
    pipe.delete(worker_key(name))
    pipe.zrem(WORKERS_KEY, name)
    pipe.execute()


def _s(v: str | bytes) -> str:
    return v.decode() if isinstance(v, bytes) else v


def queue_recent_names(pipe: Any) -> None:
    """Add the read of the recent worker names to a pipeline (its answer: :func:`heartbeats`'s
    ``names``), so a reader asks for them in the same round trip as its other reads."""
    pipe.zrangebyscore(WORKERS_KEY, time.time() - FORGET_S, "+inf")


def beat_keys(names: Any) -> list[str]:
    """The heartbeat keys of ``names`` (the answer of :func:`queue_recent_names`), by name."""
    return [worker_key(n) for n in sorted(_s(n) for n in cast("list[str | bytes]", names or []))]


def parse_beats(raws: Any) -> list[dict]:
    """``MGET``'s answer on :func:`beat_keys`: the heartbeats still alive (expired: absent)."""
    out: list[dict] = []
    for raw in raws or []:
        if raw:
            try:
                out.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return out


def heartbeats(client: redis.Redis, names: Any) -> list[dict]:
    """The heartbeats of ``names`` still alive (one ``MGET``; expired ones are absent), by name."""
    keys = beat_keys(names)
    return parse_beats(client.mget(keys)) if keys else []


def alive_workers(client: redis.Redis) -> list[dict]:
    """Heartbeats of the workers alive now (their keys have not expired), by name: two round
    trips, whatever else the keyspace holds."""
    pipe = client.pipeline(transaction=False)
    queue_recent_names(pipe)
    return heartbeats(client, pipe.execute()[0])


__all__ = [
    "FORGET_S",
    "alive_workers",
    "announce_worker",
    "beat_keys",
    "forget_worker",
    "heartbeat_ttl",
    "heartbeats",
    "parse_beats",
    "queue_recent_names",
]
