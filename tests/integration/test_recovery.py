"""Failure and recovery on a private stack that starts with NO worker: a run waits (and says
so) until a worker joins; a finisher that dies leaves no run ``running`` forever; cancelled
and failed runs outlive Redis like done runs; Redis down is a 503, not a hang.

The tests run in file order on one stack (module fixture ``bare``): the first ones need no
worker, later ones start one.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest

from service.runstate.presence import announce_worker, forget_worker
from tests.integration.conftest import linear_spec, queue_unchecked
from tests.integration.test_runs_api import slow_spec
from tests.stack import running_stack


@pytest.fixture(scope="module")
def bare(store_root, tmp_path_factory):
    """A stack with no worker at first (tests add them with ``start_worker``)."""
    dst = tmp_path_factory.mktemp("bare") / "store"
    shutil.copytree(store_root, dst, ignore=shutil.ignore_patterns("runs", "tmp"))
    env = {"BASIN_LOST_TASK_GRACE_SECONDS": "1"}
    with running_stack(dst, workers=0, lease_seconds=3, ui=False, env=env) as s:
        yield s


def wait_for(stack, run_id: str, pred, timeout: float = 90.0, what: str = "") -> dict:
    """Poll ``GET /api/runs/{id}`` until ``pred(detail)``; returns the detail."""
    deadline = time.monotonic() + timeout
    d: dict = {}
    while time.monotonic() < deadline:
        d = stack.request("GET", f"/api/runs/{run_id}").json()
        if pred(d):
            return d
        time.sleep(0.1)
    raise AssertionError(
        f"timed out waiting for {what}: {json.dumps(d)[:400]}\n{stack.log('worker0')}"
    )


def ensure_worker(stack) -> None:
    """Start a worker unless one is alive (so each test can also run on its own)."""
    if not stack.live_worker_names:
        stack.start_worker()


def stored(stack, run_id: str) -> dict | None:
    p = stack.store / "runs" / f"{run_id}.json"
    return json.loads(p.read_text()) if p.exists() else None


def test_health_without_a_worker_is_degraded_but_answers(bare):
    r = bare.request("GET", "/api/health")
    assert r.status_code == 200
    body = r.json()
    assert body["ok"] is False and body["status"] == "degraded"
    assert body["redis"]["ok"] is True and body["workers"] == []
    assert "no worker is alive" in body["warning"]


def test_a_run_without_a_live_worker_says_so_and_starts_when_one_joins(bare):
    r = bare.request("POST", "/api/runs", json=linear_spec(points=3, seed=41))
    assert r.status_code == 201, r.text  # accepted: it waits for a worker
    run_id = r.json()["id"]
    time.sleep(0.5)
    d = bare.request("GET", f"/api/runs/{run_id}").json()
    assert d["status"] == "queued" and d["done"] == 0 and d["workers"] == []
    assert d["warning"] == "no worker is alive; the run will start when one joins"
    pts = bare.request("GET", f"/api/runs/{run_id}/points").json()
    assert pts["warning"] == d["warning"] and pts["workers"] == [] and pts["points"] == []

    bare.start_worker()
    d = bare.wait_run(run_id, timeout=90)
    assert d["status"] == "done" and d["done"] == 3
    assert d["warning"] is None
    assert bare.request("GET", "/api/health").json()["status"] == "ok"


def test_a_dead_finishers_lock_expires_and_a_waiting_worker_finishes_the_run(bare):
    ensure_worker(bare)
    r = bare.request("POST", "/api/runs", json=linear_spec(points=4, seed=42))
    run_id = r.json()["id"]
    red = bare.redis()
    # a finisher that took the lock and then died (its heartbeat will never renew it)
    red.set(f"basin:run:{run_id}:final", "ghost@dead:0", px=600_000)
    wait_for(bare, run_id, lambda d: d["done"] == 4, what="all points recorded")
    time.sleep(1.0)
    d = bare.request("GET", f"/api/runs/{run_id}").json()
    assert d["status"] == "running"  # nobody ends a run under another finisher's lock
    assert stored(bare, run_id) is None

    red.pexpire(f"basin:run:{run_id}:final", 300)  # the dead finisher's lock runs out
    d = bare.wait_run(run_id, timeout=120)  # (the waiting worker retakes the lock; no lease wait)
    assert d["status"] == "done" and d["summary"]["barrier"]["loss"] is not None
    doc = bare.wait_stored(run_id)  # (written just after the run ends)
    assert doc["status"] == "done" and len(doc["points"]) == 4


def test_a_run_whose_workers_all_died_while_finishing_is_requeued_by_the_api(bare):
    ensure_worker(bare)
    r = bare.request("POST", "/api/runs", json=linear_spec(points=3, seed=43))
    run_id = r.json()["id"]
    red = bare.redis()
    red.set(f"basin:run:{run_id}:final", "ghost@dead:1", px=600_000)
    wait_for(bare, run_id, lambda d: d["done"] == 3, what="all points recorded")
    bare.kill_worker(len(bare.workers) - 1)  # SIGKILL: its task is never redelivered
    bare.purge_tasks()  # and the run's other task was consumed too
    red.pexpire(f"basin:run:{run_id}:final", 300)
    time.sleep(3.5)  # the killed worker's heartbeat expires
    d = bare.request("GET", f"/api/runs/{run_id}").json()
    assert d["status"] == "running" and d["workers"] == []
    assert "no worker is alive" in d["warning"]

    bare.start_worker()  # has no task for this run: only the API's re-queue can finish it
    d = bare.wait_run(run_id, timeout=60)
    assert d["status"] == "done" and d["done"] == 3
    assert bare.wait_stored(run_id)["status"] == "done"  # (written just after the run ends)


def test_a_queued_run_whose_tasks_were_lost_is_requeued_by_the_reaper(bare):
    for i, w in enumerate(bare.workers):
        if w is not None:
            bare.kill_worker(i)
    r = bare.request("POST", "/api/runs", json=linear_spec(points=3, seed=46))
    run_id = r.json()["id"]
    assert bare.purge_tasks() >= 1  # its tasks are gone before any worker took one
    bare.start_worker()  # idle: it has no task for the run; only the reaper can send one
    d = bare.wait_run(run_id, timeout=90)
    assert d["status"] == "done" and d["done"] == 3
    assert bare.wait_stored(run_id)["status"] == "done"  # (written just after the run ends)


def _snapshot(red, run_id: str) -> dict:
    """Everything Redis holds about a run, and the Celery queue's length."""
    read = {"hash": red.hgetall, "list": lambda k: red.lrange(k, 0, -1),
            "zset": lambda k: red.zrange(k, 0, -1, withscores=True),
            "set": lambda k: sorted(red.smembers(k)), "stream": red.xrange, "string": red.get}
    keys = sorted(red.scan_iter(match=f"basin:run:{run_id}*"))
    state: dict = {k: read[red.type(k)](k) for k in keys}
    state["queue"] = red.llen("basin")
    return state


def test_reading_a_run_changes_nothing(bare):
    """GETs only read: a run whose document is not yet written stays unwritten, and an
    orphaned run gets no task, however often it is read. (These two runs are taken off
    ``basin:active``, so the stack's own reaper leaves them alone too.)"""
    from fastapi.testclient import TestClient

    from backend.app.main import create_app
    from service.settings import Settings

    settings = Settings(redis_url=bare.redis_url, store=bare.store, reap_seconds=0,
                        public_url="", allowed_hosts="testserver")
    client = TestClient(create_app(settings, with_ui=False), headers={"X-Basin-Token": ""})
    red = bare.redis()
    for i, w in enumerate(bare.workers):
        if w is not None:
            bare.kill_worker(i)
    ended = client.post("/api/runs", json=linear_spec(points=3, seed=47)).json()["id"]
    assert client.post(f"/api/runs/{ended}/cancel").status_code == 200
    (bare.store / "runs" / f"{ended}.json").unlink()  # as if its writer had died
    red.hset(f"basin:run:{ended}", "persist", "pending")
    orphan = client.post("/api/runs", json=linear_spec(points=3, seed=48)).json()["id"]
    red.hset(f"basin:run:{orphan}", mapping={"status": "running", "started": "1"})
    red.zrem("basin:active", ended, orphan)
    announce_worker(red, "idle@test", {"name": "idle@test", "run": None}, 60)
    before = {rid: _snapshot(red, rid) for rid in (ended, orphan)}
    for rid in (ended, orphan):
        for path in ("", "/points", "/points?after=0-0", "/export", "/export?format=csv"):
            assert client.get(f"/api/runs/{rid}{path}").status_code == 200
    assert client.get("/api/runs").status_code == 200
    assert {rid: _snapshot(red, rid) for rid in (ended, orphan)} == before
    assert not (bare.store / "runs" / f"{ended}.json").exists()
    forget_worker(red, "idle@test")


def test_cancelled_and_failed_runs_are_stored_and_outlive_redis(bare):
    ensure_worker(bare)
    cancelled = bare.request("POST", "/api/runs", json=slow_spec(points=41, seed=44)).json()["id"]
    wait_for(bare, cancelled, lambda d: d["done"] >= 1, what="a first point")
    assert bare.request("POST", f"/api/runs/{cancelled}/cancel").status_code == 200
    kept = bare.request("GET", f"/api/runs/{cancelled}/points").json()["points"]
    doc = stored(bare, cancelled)
    assert doc is not None and doc["status"] == "cancelled" and doc["total"] == 41
    assert sorted(p["index"] for p in doc["points"]) == sorted(p["index"] for p in kept)

    bad = linear_spec(points=3, seed=45, scope="^no_such_param$")
    failed = queue_unchecked(bare, bad)  # Check refuses it up front; the worker's failure path
    f = bare.wait_run(failed, timeout=60)
    assert f["status"] == "failed" and "no_such_param" in f["error"]
    # the cancelled run's worker is free again once the failed one ended
    wait_for(bare, cancelled, lambda d: not d["workers"], what="the worker leaving")

    bare.flush_redis()
    c = bare.request("GET", f"/api/runs/{cancelled}").json()
    assert c["source"] == "store" and c["status"] == "cancelled"
    assert c["done"] == len(kept) >= 1 and c["total"] == 41
    assert c["progress"] == pytest.approx(len(kept) / 41, abs=1e-4)
    pts = bare.request("GET", f"/api/runs/{cancelled}/points").json()
    assert pts["status"] == "cancelled" and len(pts["points"]) == len(kept)
    csv_rows = bare.request("GET", f"/api/runs/{cancelled}/export?format=csv").text.splitlines()
    assert len(csv_rows) == 1 + len(kept)

    g = bare.request("GET", f"/api/runs/{failed}").json()
    assert g["source"] == "store" and g["status"] == "failed"
    assert "no_such_param" in g["error"] and g["done"] == 0 and g["total"] == 3
    listed = {e["id"]: e for e in bare.request("GET", "/api/runs").json()}
    assert listed[cancelled]["status"] == "cancelled" and listed[cancelled]["total"] == 41
    assert listed[failed]["status"] == "failed" and "no_such_param" in listed[failed]["error"]


def test_redis_down_is_a_503_with_the_reason(bare):
    for i, w in enumerate(bare.workers):
        if w is not None:
            bare.kill_worker(i)
    bare.stop_redis()
    r = bare.request("GET", "/api/health", timeout=30)
    assert r.status_code == 503
    body = r.json()
    assert body["ok"] is False and body["status"] == "down" and body["redis"]["ok"] is False
    assert "Redis is unreachable" in body["warning"]
    r = bare.request("GET", "/api/runs/AAAAAAAAAAAAAAAAAAAAAA", timeout=30)
    assert r.status_code == 503 and "Redis" in r.json()["detail"]
