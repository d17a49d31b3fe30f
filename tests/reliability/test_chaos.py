"""Workers SIGKILLed at random moments: every run still ends ``done`` with every point
recorded exactly once (in the stream, through the API and in the stored document).

Two workers serve the runs. The first to reach a moment chosen by a seeded RNG is held
there by the hook (:class:`tests.stack.Seam`) — inside a point (lease held), holding the
finish lock before the summary (``finish``), or after the run ended and before its
document is written (``persist``) — then killed with SIGKILL (what the kernel's OOM
killer does), and a new worker is started in its place. The dead worker's lease (or
finish lock) expires; the other worker takes the point over or finishes the run (or the
API's reaper stores the document, or re-queues a run nobody drains).
"""

from __future__ import annotations

import random
import time
from collections import Counter

from tests.reliability.conftest import (
    assert_recorded_once,
    count,
    ensure_worker,
    linear_spec,
)

SEED = 12
POINTS = 5


def kill_plan(n: int, seed: int = SEED) -> list[str | int]:
    """Where each run's worker dies: the first three cover ``finish``, ``persist`` and a
    point; the rest are drawn (a random point index, or one of the two end moments)."""
    rng = random.Random(seed)
    plan: list[str | int] = ["finish", "persist", rng.randrange(POINTS)]
    while len(plan) < n:
        plan.append(rng.choice([rng.randrange(POINTS)] * 3 + ["finish", "persist"]))
    return plan[:n]


def test_runs_survive_a_worker_killed_at_a_random_moment(rstack, figures):
    stack, seam = rstack, rstack.seam
    assert seam is not None
    ensure_worker(stack)
    while len(stack.live_worker_names) < 2:  # a second one, so a kill never waits for a boot
        stack.start_worker(wait=False)
    plan = kill_plan(count(3, 20))
    t0 = time.monotonic()
    kills: list[dict] = []
    for i, moment in enumerate(plan):
        hold = seam.hold("any", moment)
        try:
            r = stack.request("POST", "/api/runs", json=linear_spec(POINTS, seed=100 + i))
            assert r.status_code == 201, r.text
            run_id = r.json()["id"]
            _, victim = seam.wait(stack, run_id, moment)  # the worker is held right there
            stack.kill_worker(stack.worker_index(victim))
            seam.release(run_id)  # its successor is not held
        finally:
            seam.unhold(hold)
        stack.start_worker(wait=False)  # the replacement boots while the run goes on
        doc = assert_recorded_once(stack, run_id, POINTS)
        kills.append({"run": run_id, "moment": str(moment), "requeued": doc.get("requeued")})
    figures["chaos"] = {
        "runs": len(plan),
        "kills": len(kills),
        "moments": dict(Counter(str(k["moment"]) for k in kills)),
        "all_done_exactly_once": True,
        "seconds": round(time.monotonic() - t0, 1),
        "seed": SEED,
    }
