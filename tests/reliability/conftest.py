"""The reliability suite: one real stack, broken on purpose (see docs/development.md).

``BASIN_RELIABILITY=full`` (``make reliability``) runs the counts the issue asks for; unset
(inside ``make test``) a short version of each test runs. Counts, not deadlines, bound
the time. Every test is marked ``reliability`` and ``integration``; the figures of a
session go to ``test-artifacts/reliability.json``.

One stack (package scope) serves every test here: real redis-server with an append-only
file (restarted by one test), one Celery worker with the hook (:class:`tests.stack.Seam`;
killed and replaced by the chaos test), uvicorn (restarted by one test).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from service.store import Store
from tests import factories
from tests.stack import Stack, running_stack

FULL = os.environ.get("BASIN_RELIABILITY", "").strip().lower() == "full"
MODE = "full" if FULL else "short"
LEASE_SECONDS = 3
TOKEN = "reliability-token"
ARTIFACT = Path(__file__).resolve().parents[2] / "test-artifacts" / "reliability.json"


def count(short: int, full: int) -> int:
    """How many of something this mode runs."""
    return full if FULL else short


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/reliability/" in str(item.fspath):
            item.add_marker(pytest.mark.reliability)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def figures() -> Any:
    """Figures the tests report; written to ``test-artifacts/reliability.json`` at the end."""
    out: dict[str, Any] = {
        "mode": MODE,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    yield out
    ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
    ARTIFACT.write_text(json.dumps(out, indent=2, sort_keys=True, default=str) + "\n")


@pytest.fixture(scope="package")
def rel_store(tmp_path_factory, classifier_family) -> Path:
    """A store with ``ft_a``, ``ft_b``, ``ft_c`` and ``eval.csv`` (64 rows)."""
    root = tmp_path_factory.mktemp("reliability") / "store"
    store = Store(root)
    for name in ("ft_a", "ft_b", "ft_c"):
        store.add_checkpoint_dir(classifier_family[name], name=name, tags={"task": "sentiment"})
    store.add_dataset(classifier_family["data"], name="eval.csv")
    return root


@pytest.fixture(scope="package")
def rstack(rel_store) -> Stack:
    """The suite's stack: persistent Redis, one worker with the hook, short leases, a token
    (writes carry it in ``X-Basin-Token``; pages that only read a run do not)."""
    env = {"BASIN_LOST_TASK_GRACE_SECONDS": "1"}
    with running_stack(
        rel_store,
        workers=1,
        token=TOKEN,
        lease_seconds=LEASE_SECONDS,
        ui=False,
        env=env,
        seam=rel_store.parent / "seam",
        redis_dir=rel_store.parent / "redis-data",
    ) as s:
        yield s


@pytest.fixture(autouse=True)
def _no_run_outlives_its_test(request):
    """A test that fails part-way can leave a run going, and a later test's ``hold("any", …)``
    would then catch that run's worker instead of its own. After each test: drop every hold,
    release the workers held in a run that has not ended, and delete that run."""
    yield
    if "rstack" not in request.fixturenames:
        return
    stack: Stack = request.getfixturevalue("rstack")
    for hold in stack.seam.dir.glob("hold-*"):
        hold.unlink(missing_ok=True)
    r = stack.request("GET", "/api/runs")
    if r.status_code != 200:
        return
    for run in r.json():
        if run["status"] not in ("done", "failed", "cancelled"):
            stack.seam.release(run["id"])
            stack.request("DELETE", f"/api/runs/{run['id']}")


def linear_spec(points: int = 5, seed: int = 0, **kw) -> dict:
    spec = {
        "path": {"type": "linear", "a": "ft_a", "b": "ft_b", "points": points},
        "dataset": "eval.csv",
        "max_examples": 16,
        "batch_size": 16,
        "seed": seed,
    }
    spec.update(kw)
    return spec


def ensure_worker(stack: Stack) -> None:
    """Start a worker unless one is alive (each test leaves the stack able to run)."""
    if not stack.live_worker_names:
        stack.start_worker()


def all_points_via_api(stack: Stack, run_id: str) -> list[int]:
    """Every point index the API gives for ``run_id``, following ``?after=`` cursors."""
    seen: list[int] = []
    after: str | None = None
    while True:
        params = {"after": after} if after else {}
        body = stack.request("GET", f"/api/runs/{run_id}/points", params=params).json()
        if body.get("reset"):
            seen = []
        seen += [p["index"] for p in body["points"]]
        if body["cursor"] == after or not body["points"]:
            return seen
        after = body["cursor"]


def assert_recorded_once(stack: Stack, run_id: str, total: int) -> dict:
    """The run ended ``done`` and each of its points is recorded exactly once: in the
    Redis stream, through the API, and in the stored document. Returns the document."""
    detail = stack.wait_run(run_id, timeout=300)
    assert detail["status"] == "done", detail
    want = list(range(total))
    entries = stack.redis().xrange(f"basin:run:{run_id}:points")
    stream = [json.loads(f["point"])["index"] for _, f in entries]
    if entries:  # (a stream may have expired once the run is stored)
        assert sorted(stream) == want, Counter(stream)
    api = all_points_via_api(stack, run_id)
    assert sorted(api) == want, Counter(api)
    doc = stack.wait_stored(run_id, timeout=120)
    assert doc["status"] == "done"
    stored = [p["index"] for p in doc["points"]]
    assert sorted(stored) == want, Counter(stored)
    return doc


def store_tmp_leftovers(store: Path) -> list[str]:
    """Files left in the store's ``tmp/`` (uploads in flight clean up after themselves)."""
    tmp = store / "tmp"
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")) if tmp.exists() else []


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


__all__ = [
    "FULL",
    "LEASE_SECONDS",
    "MODE",
    "TOKEN",
    "all_points_via_api",
    "assert_recorded_once",
    "count",
    "ensure_worker",
    "factories",
    "linear_spec",
    "percentile",
    "store_tmp_leftovers",
]
