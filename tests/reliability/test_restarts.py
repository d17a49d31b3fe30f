"""Redis restarted mid-run (its data in an append-only file) and the API restarted mid-run:
the runs complete, and a live reader following ``?after=`` cursors — as the run page
does — resumes from its cursor and sees every point exactly once.

The worker is held inside a point (the hook) while the restart happens, so the restart
falls in the middle of the run by construction, not by timing.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import httpx

from tests.reliability.conftest import assert_recorded_once, count, ensure_worker, linear_spec

POINTS = 8


class Reader(threading.Thread):
    """A run page: polls ``/points?after=<cursor>`` until the run has ended and it has
    every point; connection errors and 503s (the restart) are retried from its cursor."""

    def __init__(self, base_url: str, run_id: str, total: int):
        super().__init__(daemon=True)
        self.url = f"{base_url}/api/runs/{run_id}/points"
        self.total = total
        self.seen: list[int] = []
        self.errors: Counter[str] = Counter()
        self.resets = 0
        self.polls = 0
        self.stop = threading.Event()

    def run(self) -> None:
        after: str | None = None
        with httpx.Client(timeout=30) as c:
            while not self.stop.is_set():
                try:
                    r = c.get(self.url, params={"after": after} if after else {})
                except httpx.HTTPError as e:
                    self.errors[type(e).__name__] += 1
                    time.sleep(0.1)
                    continue
                self.polls += 1
                if r.status_code != 200:
                    self.errors[str(r.status_code)] += 1
                    time.sleep(0.1)
                    continue
                body: dict[str, Any] = r.json()
                if body.get("reset"):
                    self.resets += 1
                    self.seen = []
                self.seen += [p["index"] for p in body["points"]]
                after = body["cursor"]
                if body["status"] in ("done", "failed", "cancelled") and not body["points"]:
                    return
                time.sleep(0.05)


def restart_mid_run(stack, figures, which: str, seed: int) -> None:
    seam = stack.seam
    ensure_worker(stack)
    hold = seam.hold("any", 3)
    try:
        r = stack.request("POST", "/api/runs", json=linear_spec(POINTS, seed=seed))
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        reader = Reader(stack.base_url, run_id, POINTS)
        reader.start()
        seam.wait(stack, run_id, 3)  # mid-run: a worker is inside point 3
        before = stack.request("GET", f"/api/runs/{run_id}").json()["done"]
        assert 1 <= before < POINTS  # (points 0 and 7 come first: coarse to fine)
        t0 = time.monotonic()
        stack.restart_redis() if which == "redis" else stack.restart_api()
        restart_s = time.monotonic() - t0
        seam.release(run_id)
    finally:
        seam.unhold(hold)
    assert_recorded_once(stack, run_id, POINTS)
    reader.join(timeout=300)
    reader.stop.set()
    assert not reader.is_alive(), "the live reader never saw the run end"
    assert sorted(reader.seen) == list(range(POINTS)), Counter(reader.seen)  # none lost, none twice
    figures.setdefault("restarts", {}).setdefault(which, []).append(
        {
            "run": run_id,
            "restart_s": round(restart_s, 2),
            "reader_polls": reader.polls,
            "reader_errors": dict(reader.errors),
            "reader_resets": reader.resets,
            "points_seen": len(reader.seen),
            "recorded_before_restart": before,
        }
    )


def test_a_redis_restart_mid_run_loses_and_doubles_nothing(rstack, figures):
    for i in range(count(1, 3)):
        restart_mid_run(rstack, figures, "redis", seed=300 + i)


def test_an_api_restart_mid_run_loses_and_doubles_nothing(rstack, figures):
    for i in range(count(1, 3)):
        restart_mid_run(rstack, figures, "api", seed=400 + i)
