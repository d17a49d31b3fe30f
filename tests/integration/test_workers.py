"""Several workers on one run: every point evaluated and recorded exactly once, also when a
worker is killed with SIGKILL in the middle of a point (held there by the worker hook,
:class:`tests.stack.Seam`: the test waits for that event, not for a clock)."""

from __future__ import annotations

import json
import time

from tests.integration.conftest import LEASE_SECONDS, plane_spec
from tests.integration.test_runs_api import slow_spec


def stream_indices(stack, run_id: str) -> tuple[list[int], list[str]]:
    """Every entry of the run's Redis stream: (indices, worker names), in recorded order."""
    entries = stack.redis().xrange(f"basin:run:{run_id}:points")
    return (
        [json.loads(f["point"])["index"] for _, f in entries],
        [f["worker"] for _, f in entries],
    )


def test_two_workers_share_a_run_and_evaluate_every_point_once(stack):
    run_id = stack.request("POST", "/api/runs", json=plane_spec(res=6, seed=1)).json()["id"]
    detail = stack.wait_run(run_id)
    assert detail["status"] == "done" and detail["done"] == detail["total"] == 36
    indices, workers = stream_indices(stack, run_id)
    assert sorted(indices) == list(range(36))  # each point recorded once
    assert detail["evaluations"] == 36  # and evaluated once: no duplicate work
    assert set(workers) <= set(stack.worker_names)


def test_a_killed_worker_loses_no_point(stack):
    total = 9
    seam = stack.seam
    hold = seam.hold("any", 1)  # the worker that takes point 1 stays inside it
    try:
        run_id = stack.request("POST", "/api/runs", json=slow_spec(points=total, seed=2)).json()["id"]
        _, victim = seam.wait(stack, run_id, 1)  # a worker is in the middle of point 1
        stack.kill_worker(stack.worker_index(victim))
        killed_at = time.monotonic()
        seam.release(run_id)  # whoever takes point 1 over is not held
    finally:
        seam.unhold(hold)

    detail = stack.wait_run(run_id, timeout=120)
    assert detail["status"] == "done", detail
    indices, workers = stream_indices(stack, run_id)
    assert sorted(indices) == list(range(total))  # every point, none twice
    assert detail["requeued"] >= 1  # the victim's lease expired and was taken over
    assert time.monotonic() - killed_at >= LEASE_SECONDS - 1.5
    health = stack.request("GET", "/api/health").json()
    assert victim not in {w["name"] for w in health["workers"]}  # its heartbeat expired
    # restore the pool for the tests after this one
    stack.start_worker()
