"""``basin up`` supervises its children: a worker or Redis killed mid-run is started again,
the API and the dashboard stay up, the restart is reported (``/api/health``, the dashboard
banner), and the run completes with every point recorded exactly once (Redis keeps its
data in an append-only file in the store, so its restart loses nothing).

One ``basin up`` (module fixture) with the leases it uses by default (15 s), over a copy
of the integration store; the tests run in file order on it. Its worker runs the test
hook (``BASIN_WORKER_HOOK``, :class:`tests.stack.Seam`), so "mid-run" is an event — a
worker held inside a point — not a moment guessed from the clock.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from frontend.app import supervisor_banner
from service import launch as launcher
from tests.integration.test_runs_api import slow_spec
from tests.stack import Seam, start_basin_up


@dataclass
class Up:
    base: str
    store: Path
    log: Path
    proc: subprocess.Popen
    redis_port: int
    seam: Seam

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, timeout=30)

    def health(self) -> dict:
        r = self.get("/api/health")
        assert r.status_code == 200, r.text
        return r.json()

    def redis(self):
        import redis

        return redis.Redis(port=self.redis_port, decode_responses=True, socket_timeout=10)

    def indices(self, run_id: str) -> list[int]:
        return [json.loads(f["point"])["index"]
                for _, f in self.redis().xrange(f"basin:run:{run_id}:points")]

    def wait(self, what: str, pred, timeout: float = 180.0):
        """Poll ``pred()`` until it returns something truthy (errors while a service
        restarts count as "not yet")."""
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            try:
                last = pred()
            except (httpx.HTTPError, OSError, KeyError, ValueError, AssertionError) as e:
                last = e
            else:
                if last:
                    return last
            time.sleep(0.2)
        tail = self.log.read_text(errors="replace")[-3000:]
        worker = (self.store / "logs" / "worker.log").read_text(errors="replace")[-3000:]
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})\n{tail}\n{worker}")


@pytest.fixture(scope="module")
def up(store_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("up")
    store = root / "store"
    shutil.copytree(store_root, store, ignore=shutil.ignore_patterns("runs", "tmp"))
    port = launcher.free_port()
    seam = Seam(root / "seam")
    seam.dir.mkdir()
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "BASIN_WORKER_HOOK": "tests.stack:seam_hook", "BASIN_SEAM_DIR": str(seam.dir),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
           "BASIN_DEMO": "0", "BASIN_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1",
           "BASIN_WORKER_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for k in ("BASIN_LEASE_SECONDS", "BASIN_API_TOKEN", "BASIN_REDIS_URL"):
        env.pop(k, None)  # basin up's own settings
    log = root / "up.log"
    proc = start_basin_up(port, store, env, log)
    try:
        launcher.wait_healthy(f"http://127.0.0.1:{port}", timeout=120, procs=[proc])
        m = re.search(r"starting Redis \(.*\) on 127\.0\.0\.1:(\d+)", log.read_text())
        assert m, log.read_text()
        yield Up(f"http://127.0.0.1:{port}", store, log, proc, int(m.group(1)), seam)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def _post_held(up: Up, spec: dict, index: int) -> str:
    """Post a run whose worker is held inside point ``index`` (coarse to fine, 7 points:
    0, 6, 3, …); returns its id once the worker is there. ``up.seam.unhold`` lets it go."""
    up.seam.hold("any", index)
    run_id = httpx.post(up.base + "/api/runs", json=spec, timeout=30).json()["id"]
    up.wait(f"a worker inside point {index} of run {run_id}",
            lambda: up.seam.arrived(run_id, index))
    return run_id


def _unhold(up: Up) -> None:
    up.seam.unhold(*up.seam.dir.glob("hold-*"))


def test_basin_up_keeps_redis_on_disk_with_short_leases(up):
    info = up.redis().config_get("append*")
    assert info["appendonly"] == "yes" and info["appendfsync"] == "always"
    assert Path(up.redis().config_get("dir")["dir"]) == (up.store / "redis").resolve()
    assert "lease 15 s" in up.log.read_text()


def test_a_killed_worker_is_restarted_and_its_run_completes(up):
    total = 7
    run_id = _post_held(up, slow_spec(points=total, seed=31), 3)
    victim = up.health()["workers"][0]["pid"]
    os.kill(victim, signal.SIGKILL)  # mid-point; what the kernel's OOM killer does
    _unhold(up)  # (the restarted worker goes through)

    # the API and the dashboard stay up while the worker is gone
    assert up.get("/api/health").status_code == 200
    assert up.get("/").status_code == 200
    health = up.wait("a new worker", lambda: (h := up.health())["workers"]
                     and h["workers"][0]["pid"] != victim and h)
    event = up.wait("the restart event", lambda: next(
        (e for e in up.health()["supervisor"]["events"] if e["service"] == "worker"), None))
    assert event["reason"] == "exited with code -9 (killed — out of memory?)"
    assert re.fullmatch(r"the worker exited with code -9 \(killed — out of memory\?\) and was "
                        r"restarted at \d\d:\d\d:\d\d UTC", event["message"]), event
    banner = str(supervisor_banner(up.health()))
    assert event["message"] in banner and "Service restarted" in banner
    assert health["redis"]["ok"]

    detail = up.wait("the run to end", lambda: (d := up.get(f"/api/runs/{run_id}").json())
                     ["status"] in ("done", "failed", "cancelled") and d, timeout=300)
    assert detail["status"] == "done", detail
    assert sorted(up.indices(run_id)) == list(range(total))  # every point, none twice
    text = up.log.read_text()
    assert "the worker exited with code -9" in text and "stopping" not in text


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_redis_stopped_mid_run_is_restarted_and_loses_no_point(up, sig):
    total = 7
    run_id = _post_held(up, slow_spec(points=total, seed=40 + sig), 3)  # 0 and 6 recorded
    before = {json.loads(f["point"])["index"]: json.loads(f["point"])["metrics"]
              for _, f in up.redis().xrange(f"basin:run:{run_id}:points")}
    pid = int(up.redis().info("server")["process_id"])
    n_events = len([e for e in up.health()["supervisor"]["events"] if e["service"] == "redis"])
    os.kill(pid, sig)

    up.wait("Redis restarted", lambda: len(
        [e for e in up.health()["supervisor"]["events"] if e["service"] == "redis"]) > n_events)
    _unhold(up)  # the held worker finishes its point against the restarted Redis
    assert sorted(before) == [0, 6]
    detail = up.wait("the run to end", lambda: (d := up.get(f"/api/runs/{run_id}").json())
                     ["status"] in ("done", "failed", "cancelled") and d, timeout=300)
    assert detail["status"] == "done", detail
    after = {}
    for _, f in up.redis().xrange(f"basin:run:{run_id}:points"):
        p = json.loads(f["point"])
        assert p["index"] not in after, f"point {p['index']} recorded twice"
        after[p["index"]] = p["metrics"]
    assert sorted(after) == list(range(total))
    assert all(after[i] == m for i, m in before.items())  # recorded before the kill: kept
    assert up.proc.poll() is None and up.get("/api/health").status_code == 200


def test_a_wedged_worker_is_killed_and_a_queued_run_whose_task_it_took_is_requeued(up):
    """A worker that stops heart-beating while its process lives (SIGSTOP here; a point
    holding the GIL in life) is killed and restarted; a run queued meanwhile whose task was
    lost (taken by the wedged worker, or dropped from the queue) is re-queued by the reaper
    under ``basin up``'s settings and completes."""
    victim = up.health()["workers"][0]["pid"]
    os.kill(victim, signal.SIGSTOP)
    try:
        run_id = httpx.post(up.base + "/api/runs", json=slow_spec(points=3, seed=61),
                            timeout=30).json()["id"]
        r = up.redis()
        r.delete("basin", *r.scan_iter(match="basin\x06\x16*"))  # its tasks are lost
        assert up.get(f"/api/runs/{run_id}").json()["status"] == "queued"
        up.wait("a new worker", lambda: (h := up.health())["workers"]
                and h["workers"][0]["pid"] != victim)
    finally:
        try:
            os.kill(victim, signal.SIGCONT)  # (it was killed; only if the test failed early)
        except ProcessLookupError:
            pass
    event = up.wait("the restart event", lambda: next(
        (e for e in up.health()["supervisor"]["events"]
         if e["service"] == "worker" and "heart-beating" in e["reason"]), None))
    assert "was killed and was restarted at" in event["message"]
    detail = up.wait("the run to end", lambda: (d := up.get(f"/api/runs/{run_id}").json())
                     ["status"] in ("done", "failed", "cancelled") and d, timeout=300)
    assert detail["status"] == "done", detail
    assert sorted(up.indices(run_id)) == [0, 1, 2]
