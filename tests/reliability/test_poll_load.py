"""Viewers of a running ``per_example`` run poll cheaply (issue 22, "Done when").

Many viewers poll ``/api/runs/{id}/points`` of a 1D run kept with ``per_example: true``
(512 examples under ``BASIN_RELIABILITY=full``) while Redis holds many cached point keys
(100,000 in full), as a busy server does: the point cache keeps every point for days.
The run is held inside its last point (the worker hook), so it stays ``running`` with
every other point recorded while the viewers poll, however fast the machine is.

What a user would notice, measured on the real stack (figures to
``test-artifacts/reliability.json``, ``poll_load``):

- bytes: a viewer's first page carries each point's view (coordinates, metrics,
  intervals), not its storage record (the per-example columns): at least 10x fewer bytes
  a point than the stored document; the columns stay in the export;
- no ``SCAN`` of the keyspace per poll (Redis' own command counters): the live workers
  are read from one structure the heartbeats keep;
- p50/p95 poll latency (reported; the goal is p95 <= 50 ms, not asserted: CI's speed varies),
  as the viewers saw it and as the server spent it (its ``Server-Timing: app;dur=``
  header), and the CPU the API, Redis and the viewers spent per poll (their processes'
  CPU time over the polls: what a poll costs, whatever else the machine is running).

The viewers are a load generator of their own, not the test's Python: a locust process
(``locust_viewers.py``: gevent, :class:`locust.FastHttpUser` paced at one request each
500 ms), so they keep the pace they are asked for (200 polls/s in full) on a small machine;
one httpx event loop for 100 viewers reached 116 of those 200 and queued its own requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from basin.grid import order_1d
from service.store import Store
from tests import factories
from tests.reliability.conftest import count, ensure_worker, percentile

POINTS = 9
POLL_S = 0.5  # how often a run page asks
LOCUSTFILE = Path(__file__).with_name("locust_viewers.py")


def fill_point_cache(r, n: int, batch: int = 5000) -> str:
    """``n`` point-cache entries as a server that has run for days holds; returns their prefix."""
    prefix = "basin:pointcache:load-"
    value = json.dumps({"metrics": {"loss": 0.5, "accuracy": 0.75}})
    for lo in range(0, n, batch):
        pipe = r.pipeline(transaction=False)
        for i in range(lo, min(n, lo + batch)):
            pipe.set(f"{prefix}{i:08d}", value, ex=3600)
        pipe.execute()
    return prefix


def drop_point_cache(r, prefix: str, n: int, batch: int = 5000) -> None:
    for lo in range(0, n, batch):
        r.unlink(*(f"{prefix}{i:08d}" for i in range(lo, min(n, lo + batch))))


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def scans(r) -> int:
    """SCAN commands Redis has served since its counters were reset."""
    return int((r.info("commandstats").get("cmdstat_scan") or {}).get("calls", 0))


def crowd(base_url: str, run_id: str, n: int, polls: int, out: Path) -> tuple[dict, float]:
    """``n`` run pages polling ``run_id``: a locust process (``locust_viewers.py``), its own
    gevent loop of :class:`locust.FastHttpUser` paced at ``POLL_S``. Returns what it saw
    and the seconds it took."""
    env = {
        **os.environ,
        "BASIN_LOAD_RUN": run_id,
        "BASIN_LOAD_POLLS": str(polls),
        "BASIN_LOAD_USERS": str(n),
        "BASIN_LOAD_OUT": str(out),
        "BASIN_LOAD_POLL_S": str(POLL_S),
    }
    argv = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--users", str(n), "--spawn-rate", str(n), "--host", base_url,
        # a backstop only: the viewers end the test once each has polled `polls` times
        "--run-time", f"{int(10 * (polls + 1) * POLL_S) + 60}s",
        "--only-summary", "--loglevel", "WARNING", "--exit-code-on-error", "0",
    ]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - t0
    assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
    return json.loads(out.read_text()), took


def test_viewers_of_a_running_per_example_run_poll_lean_views_without_scans(
    rstack, rel_store, figures
):
    stack = rstack
    ensure_worker(stack)
    examples, viewers, keys, polls = (
        count(128, 512),
        count(10, 100),
        count(10_000, 100_000),
        count(4, 10),
    )
    data = factories.write_classification_dataset(
        rel_store.parent / f"load-{examples}.csv", n=examples, seed=77
    )
    Store(rel_store).add_dataset(data, name=f"load-{examples}.csv")
    r = stack.redis()
    prefix = fill_point_cache(r, keys)
    last = order_1d(POINTS)[-1]
    hold = stack.seam.hold("any", last)  # running, every other point recorded, while viewers poll
    try:
        spec = {
            "path": {"type": "linear", "a": "ft_a", "b": "ft_b", "points": POINTS},
            "dataset": f"load-{examples}.csv",
            "max_examples": examples,
            "batch_size": 64,
            "per_example": True,
            "seed": 901,
        }
        created = stack.request("POST", "/api/runs", json=spec)
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        stack.seam.wait(stack, run_id, last)
        assert stack.request("GET", f"/api/runs/{run_id}").json()["status"] == "running"
        r.config_resetstat()
        procs = {"api": stack.api_proc.pid, "redis": stack.redis_proc.pid}
        cpu0 = {k: cpu_s(pid) for k, pid in procs.items()}
        seen, took = crowd(
            stack.base_url, run_id, viewers, polls, rel_store.parent / "locust-viewers.json"
        )
        lat = [ms / 1000 for ms in seen["lat_ms"]]
        server = [ms / 1000 for ms in seen["server_ms"]]
        sizes, first, errors = seen["sizes"], seen["first"], seen["errors"]
        span = (seen["span_s"][1] or 0) - (seen["span_s"][0] or 0)  # first answer to last
        cpu = {k: cpu_s(pid) - cpu0[k] for k, pid in procs.items()}
        scanned = scans(r)
        # what the page also fetched every 4th tick before /points carried ETA and workers
        detail_bytes = len(stack.request("GET", f"/api/runs/{run_id}").content)
        stack.seam.release(run_id)
    finally:
        stack.seam.unhold(hold)
        drop_point_cache(r, prefix, keys)
    assert stack.wait_run(run_id)["status"] == "done"
    doc = stack.request("GET", f"/api/runs/{run_id}/export").json()
    stored = [p for p in doc["points"] if p["index"] != last]
    stored_per_point = sum(len(json.dumps(p, separators=(",", ":"))) for p in stored) / len(stored)
    view_bytes, view_points = first[0] if first else (0, 0)
    view_per_point = view_bytes / max(view_points, 1)
    figures["poll_load"] = {
        "viewers": viewers,
        "examples": examples,
        "cached_point_keys": keys,
        "points_held": POINTS - 1,
        "requests": len(lat),
        "errors": dict(errors),
        "p50_ms": round(percentile(lat, 50) * 1000, 1),
        "p95_ms": round(percentile(lat, 95) * 1000, 1),
        "p99_ms": round(percentile(lat, 99) * 1000, 1),
        "max_ms": round(max(lat, default=0) * 1000, 1),
        # the app's own time (Server-Timing: app;dur=): request in to response start
        "server_p50_ms": round(percentile(server, 50) * 1000, 2),
        "server_p95_ms": round(percentile(server, 95) * 1000, 2),
        "polls_per_s_asked": round(viewers / POLL_S, 1),
        # each viewer starts at its own offset in the period unless BASIN_LOAD_IN_PHASE=1
        "viewers_in_phase": os.environ.get("BASIN_LOAD_IN_PHASE", "") == "1",
        "polls_per_s": round(len(lat) / max(span, 1e-9), 1),
        "api_cpu_ms_per_poll": round(1000 * cpu["api"] / max(len(lat), 1), 2),
        "redis_cpu_ms_per_poll": round(1000 * cpu["redis"] / max(len(lat), 1), 2),
        "client_cpu_ms_per_poll": round(1000 * seen["cpu_s"] / max(len(lat), 1), 2),
        "client_cpu_warning": seen["cpu_warning"],
        "load_average": round(os.getloadavg()[0], 1),
        "first_page_bytes": view_bytes,
        "bytes_per_point_view": round(view_per_point, 1),
        "bytes_per_point_stored": round(stored_per_point, 1),
        "bytes_per_poll": round(sum(sizes) / max(len(sizes), 1), 1),
        "detail_bytes": detail_bytes,
        "scans": scanned,
        "seconds": round(took, 1),
    }
    assert not errors, errors
    # every answer says the server's own time for it (Server-Timing)
    assert len(server) == len(lat), figures["poll_load"]
    assert len(first) == viewers and all(n == POINTS - 1 for _, n in first), first
    # the per-example columns stay in the stored document (and the export) ...
    assert all(len(p["examples"]["loss"]) == examples for p in doc["points"])
    # ... but a viewer gets each point's view: 10x fewer bytes a point at least
    assert stored_per_point >= 10 * view_per_point, figures["poll_load"]
    # no poll scans the keyspace for live workers
    assert scanned == 0, figures["poll_load"]
