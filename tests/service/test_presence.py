"""Live workers from the sorted set the heartbeats keep (service/runstate/presence.py), on a
real redis-server: a beat announces a worker, a clean stop or an expired heartbeat removes
it, old names are trimmed, and reading never SCANs the keyspace."""

from __future__ import annotations

import time

import pytest
import redis

from service.runstate.keys import WORKERS_KEY, pointcache_key
from service.runstate.presence import FORGET_S, alive_workers, announce_worker, forget_worker
from tests.backend.conftest import redis_url  # noqa: F401 (fixture)


@pytest.fixture
def r(redis_url):  # noqa: F811
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushall()
    yield client
    client.flushall()


def test_workers_come_and_go_with_their_heartbeats_without_a_scan(r):
    for i in range(2000):  # a keyspace holding cached points
        r.set(pointcache_key(f"k{i}"), "{}")
    announce_worker(r, "w2@host", {"name": "w2@host", "run": "abc"}, 60)
    announce_worker(r, "w1@host", {"name": "w1@host", "run": None}, 1)
    r.config_resetstat()
    assert [w["name"] for w in alive_workers(r)] == ["w1@host", "w2@host"]
    assert "cmdstat_scan" not in r.info("commandstats")
    forget_worker(r, "w2@host")  # a clean stop: gone at once
    assert [w["name"] for w in alive_workers(r)] == ["w1@host"]
    end = time.monotonic() + 60  # hang limit: Redis expires the 1 s heartbeat
    while alive_workers(r) and time.monotonic() < end:
        time.sleep(0.05)
    assert alive_workers(r) == []  # killed (no beat): absent once its heartbeat expired


def test_names_not_seen_for_long_are_trimmed_by_the_next_beat(r):
    r.zadd(WORKERS_KEY, {"gone@host": time.time() - FORGET_S - 60})
    assert alive_workers(r) == []  # too old to be read (its heartbeat expired long ago)
    assert r.zscore(WORKERS_KEY, "gone@host") is not None  # readers write nothing
    announce_worker(r, "w@host", {"name": "w@host"}, 30)
    assert r.zrange(WORKERS_KEY, 0, -1) == ["w@host"]
