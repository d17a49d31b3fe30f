"""Expiry, the runs index, the per-point time limit and cancel within a point, on the real
stack (redis-server, Celery workers, uvicorn).

What a user would notice: Redis growing without end (finished runs and the point cache
never expire), a stored run that vanishes from its share link or from the list once Redis
forgets it, a list broken by one damaged file, a run stuck on a point that never ends, a
cancel that waits for the point in hand to finish.
"""

from __future__ import annotations

import json
import re
import time

from service.runstate import RUNS_KEY, RunKeys
from service.runstate.drain import StopFlag
from tests.integration.conftest import linear_spec
from tests.integration.test_runs_api import slow_spec
from tests.stack import running_stack


def _until(what: str, pred, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _finished_run(stack, **kw) -> str:
    run_id = stack.request("POST", "/api/runs", json=linear_spec(**kw)).json()["id"]
    assert stack.wait_run(run_id)["status"] == "done"
    stack.wait_stored(run_id)
    _until("the document's write to finish", lambda: not stack.redis().hget(
        RunKeys(run_id).run, "persist"))
    return run_id


def _expire_now(stack, run_id: str) -> None:
    r = stack.redis()
    for key in RunKeys(run_id).all():
        r.pexpire(key, 1)
    _until("the run's keys to expire", lambda: not r.exists(*RunKeys(run_id).all()))


def test_a_stored_runs_keys_and_the_point_cache_expire_and_reads_fall_back(stack):
    run_id = _finished_run(stack, points=3, seed=71)
    r = stack.redis()
    k = RunKeys(run_id)
    for key in (k.run, k.points, k.done):
        assert 0 < r.ttl(key) <= 24 * 3600, key  # BASIN_FINISHED_RUN_TTL_S default: a day
    cache = list(r.scan_iter(match="basin:pointcache:*"))
    assert cache and all(0 < r.ttl(c) <= 7 * 24 * 3600 for c in cache)

    _expire_now(stack, run_id)  # as a day later
    detail = stack.request("GET", f"/api/runs/{run_id}").json()
    assert detail["source"] == "store" and detail["status"] == "done" and detail["done"] == 3
    pts = stack.request("GET", f"/api/runs/{run_id}/points").json()
    assert sorted(p["index"] for p in pts["points"]) == [0, 1, 2]
    assert run_id in {e["id"] for e in stack.request("GET", "/api/runs").json()}
    # the reaper drops the expired id from Redis's list of runs (the store's index has it)
    _until("the id to leave basin:runs", lambda: r.zscore(RUNS_KEY, run_id) is None)


def test_the_runs_list_reads_the_index_so_a_damaged_document_does_not_break_it(stack):
    run_id = _finished_run(stack, points=3, seed=72)
    _expire_now(stack, run_id)
    (stack.store / "runs" / f"{run_id}.json").write_text("{damaged on disk")
    r = stack.request("GET", "/api/runs")
    assert r.status_code == 200
    entry = next(e for e in r.json() if e["id"] == run_id)
    assert entry["status"] == "done" and entry["done"] == entry["total"] == 3
    assert entry["checkpoints"] == [entry["spec"]["path"]["a"], entry["spec"]["path"]["b"]]
    assert stack.request("GET", f"/api/runs/{run_id}").status_code == 404  # unreadable: no 500

    assert stack.request("DELETE", f"/api/runs/{run_id}").status_code == 204
    assert run_id not in {e["id"] for e in stack.request("GET", "/api/runs").json()}
    index = json.loads((stack.store / "runs" / "index.json").read_text())
    assert run_id not in index["runs"]


def test_cancel_stops_the_worker_within_the_point_in_hand(stack):
    # points of 1500 examples in batches of 2: each point is 750 batches
    hold = stack.seam.hold("any", 0)  # the worker that leases point 0 waits inside it
    try:
        run_id = stack.request(
            "POST", "/api/runs", json=slow_spec(points=5, seed=73, batch_size=2)).json()["id"]
        stack.seam.wait(stack, run_id, 0)
        assert stack.request("POST", f"/api/runs/{run_id}/cancel").json()["status"] == "cancelled"
        # The worker reads the stop flag at most every StopFlag.every_s; it last read it before
        # leasing the point, so once that long has passed its first batch reads it again.
        time.sleep(StopFlag(None).every_s + 0.05)  # type: ignore[arg-type]
    finally:
        stack.seam.unhold(hold)

    pattern = re.compile(rf"run {run_id} ended; stopped within point (\d+)")

    def stopped_in_point_0():
        # every worker of the shared stack may have been inside a point of this run: the
        # one held in point 0 must say it stopped there (whole logs: the line may be far back)
        found = {int(m) for log in stack.logs.glob("worker*.log")
                 for m in pattern.findall(log.read_text(errors="replace"))}
        return found if 0 in found else None

    stopped = _until("the held worker to stop within point 0", stopped_in_point_0)
    doc = stack.wait_stored(run_id)
    assert doc["status"] == "cancelled"
    assert not stopped & {p["index"] for p in doc["points"]}  # points in hand: not recorded


def test_a_point_over_the_time_limit_fails_its_run_with_the_index_and_limit(fresh_store):
    env = {"BASIN_POINT_TIME_LIMIT_S": "0.000001"}
    with running_stack(fresh_store, workers=1, lease_seconds=3, ui=False, env=env) as s:
        run_id = s.request("POST", "/api/runs", json=linear_spec(points=3, seed=74)).json()["id"]
        detail = s.wait_run(run_id)
        assert detail["status"] == "failed", detail
        assert re.match(r"point \d+ exceeded the per-point time limit of 1e-06 s",
                        detail["error"]), detail["error"]
        assert s.wait_stored(run_id)["status"] == "failed"
        # the worker is free again: it reports no run and takes the next one
        health = s.request("GET", "/api/health").json()
        assert health["status"] == "ok"


def test_the_reaper_fails_a_run_whose_point_outlived_the_limit_on_real_redis(stack, tmp_path):
    """A worker wedged inside a point (its code holds the GIL: it cannot check anything)
    never records it; the reaper's check, from Redis alone, fails the run. (Its own Redis
    database, so the stack's reaper and workers never see this run.)"""
    import redis

    from service.runstate import ACTIVE_KEY, RunQueue
    from service.runstate.reaper import reap
    from service.store import Store

    r = redis.Redis.from_url(stack.redis_url.rsplit("/", 1)[0] + "/7", decode_responses=True)
    r.flushdb()
    run_id = "wedged-run-0001"
    k = RunKeys(run_id)
    r.hset(k.run, mapping={"spec": "{}", "status": "running", "total": "3", "done": "1",
                           "created": str(time.time())})
    r.zadd(ACTIVE_KEY, {run_id: time.time()})
    q = RunQueue(r, run_id)
    assert q.begin(0) and q.begin(2) and not q.begin(2)  # first lease time only
    r.sadd(k.done, "0")  # point 0 was recorded in time; point 2 never comes back
    r.zadd(k.leases, {"2": time.time() + 3600})  # its (wedged) worker holds the lease
    store = Store(tmp_path / "store")
    assert reap(r, store, lambda _id: None, point_limit_s=3600).failed == []
    time.sleep(0.01)  # the limit below must be exceeded by the server clock
    out = reap(r, store, lambda _id: None, point_limit_s=0.001, finished_ttl_s=60)
    assert out.failed == [run_id]
    assert r.hget(k.run, "status") == "failed"
    assert r.hget(k.run, "error").startswith("point 2 exceeded the per-point time limit of 0.001 s")
    assert store.load_run(run_id)["status"] == "failed"  # stored, so its link outlives Redis
    assert 0 < r.ttl(k.run) <= 60
    r.flushdb()
