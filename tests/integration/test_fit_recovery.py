"""A fit whose worker dies: on a private stack (one real Celery worker), a running fit's
worker is SIGKILLed (by PID) mid-fit; the API's reaper ends the fit ``failed`` with an
error that says its worker died, which ``GET /api/fits/{id}`` and the fits list show.
A later worker does not pick the dead fit up again, and a new fit runs normally.

Synchronised on the fit's streamed steps (the losses ``GET /api/fits/{id}`` answers), not
on sleeps; the limits in the loops only stop a hung test.
"""

from __future__ import annotations

import shutil
import time

import pytest

from tests.integration.test_fits import add_fit_pair, fit_body, wait_fit
from tests.stack import running_stack


@pytest.fixture(scope="module")
def lone(store_root, tmp_path_factory):
    """A stack with one worker, short leases and a 1 s lost-task grace (so a dead fit's
    grace is 3 + 1 s), over a copy of the store plus the fit pair."""
    base = tmp_path_factory.mktemp("fitrecovery")
    dst = base / "store"
    shutil.copytree(store_root, dst, ignore=shutil.ignore_patterns("runs", "tmp"))
    pair = add_fit_pair(dst, base / "pair")
    env = {"BASIN_LOST_TASK_GRACE_SECONDS": "1"}
    with running_stack(dst, workers=1, lease_seconds=3, ui=False, env=env) as s:
        s.pair = pair  # type: ignore[attr-defined]
        yield s


def _until_losses(stack, fit_id: str, n: int, limit: float = 300.0) -> dict:
    """The fit's detail once it has streamed at least ``n`` training steps (its ``step``: a
    100,000-step fit logs one loss per 100 steps)."""
    end = time.monotonic() + limit
    while True:
        body = stack.request("GET", f"/api/fits/{fit_id}").json()
        if body.get("step", 0) >= n:
            return body
        assert body["status"] in ("queued", "running"), body
        assert time.monotonic() < end, (body, stack.log("worker0"))
        time.sleep(0.05)


def test_a_fit_whose_worker_is_killed_ends_failed_saying_the_worker_died(lone):
    r = lone.request("POST", "/api/fits", json=fit_body(lone.pair, steps=100_000))
    assert r.status_code == 201, r.text
    fit_id = r.json()["id"]
    running = _until_losses(lone, fit_id, 3)  # mid-fit: it has streamed three steps
    assert running["status"] == "running"
    worker = lone.redis().hget(f"basin:fit:{fit_id}", "worker")
    assert worker in lone.live_worker_names
    lone.kill_worker(lone.worker_index(worker))  # SIGKILL by PID: nothing of the worker runs after

    body = wait_fit(lone, fit_id, timeout=300)
    assert body["status"] == "failed", body
    assert body["error"].startswith(f"its worker ({worker}) died")
    assert f"at step {body['step']} of 100000" in body["error"] and "start it again" in body["error"]
    assert body["step"] >= 3 and body["control"] is None and body["runs"] == {}
    assert body["eta_s"] is None and body["finished"] is not None
    listed = {f["id"]: f for f in lone.request("GET", "/api/fits").json()}
    assert listed[fit_id]["status"] == "failed" and "died" in listed[fit_id]["error"]
    # its ended keys now expire like an ended run's (BASIN_FINISHED_RUN_TTL_S, a day by default)
    red = lone.redis()
    assert 0 < red.ttl(f"basin:fit:{fit_id}") <= 24 * 3600

    # a new worker does not take the dead fit up again; a new fit runs to its end on it
    lone.start_worker()
    r = lone.request("POST", "/api/fits", json=fit_body(lone.pair, steps=5, eval_points=3))
    new = wait_fit(lone, r.json()["id"], timeout=300)
    assert new["status"] == "done", new
    again = lone.request("GET", f"/api/fits/{fit_id}").json()
    assert again["status"] == "failed" and again["step"] == body["step"]
