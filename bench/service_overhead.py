"""``python -m bench.service_overhead``: what the service costs on top of the engine.

Workload: :mod:`bench.workload` (two fine-tuned seeds of a 4-layer BERT on real tweets;
``--tiny`` uses the test suite's 3-layer hidden-32 BERT instead), a linear path of
``--points`` points. Measured, on one machine with one worker (solo pool):

``engine``          ``basin.engine.run`` in this process: ``total_s`` (open + all points) and
                    ``points_per_s`` over the evaluation only.
``service_cold``    the same spec through the real stack (``tests.stack.running_stack``:
                    redis-server + Celery worker + uvicorn): POST ``/api/runs`` → status
                    ``done`` polled every 100 ms; includes the worker opening the landscape.
``service_warm``    runs differing only in ``seed`` (no point-cache hits; the worker's
                    checkpoint cache is warm), interleaved with the engine runs
                    (``--reps``, medians) so that load from other processes hits both.
``overhead_ratio``  engine points/s (evaluation only) ÷ service_warm points/s from the first
                    lease to ``done`` (the per-point cost of leasing, caching, recording;
                    1.0 = none). ``end_to_end_ratio``: service_warm POST→done wall time ÷
                    engine open+evaluate time.
``basin_up_s``      launching ``basin up`` (``BASIN_DEMO=0``) → ``/api/health`` healthy.

Results: printed as JSON and written to ``bench/results/service_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("bench.service_overhead")
RESULTS = Path(__file__).resolve().parent / "results" / "service_overhead.json"


def build_store(root: Path, tiny: bool) -> dict:
    """A store with checkpoints ``a``, ``b`` and dataset ``eval.csv``; returns workload facts."""
    from service.store import Store

    store = Store(root)
    if tiny:
        from tests import factories

        fam = factories.build_classifier_family(root.parent / "family", steps=20)
        a, b = fam["ft_a"], fam["ft_b"]
        data = factories.write_classification_dataset(root.parent / "eval.csv", n=256)
        desc = "tiny BERT (3 layers, hidden 32), 256 synthetic sentences"
    else:
        from bench import workload

        w = workload.build()
        a, b, data = w.a, w.b, w.data
        desc = "BERT 4 layers hidden 128 (MiniLM vocab), 256 real tweets"
    store.add_checkpoint_dir(a, name="a")
    store.add_checkpoint_dir(b, name="b")
    store.add_dataset(data, name="eval.csv")
    return {"description": desc}


def spec(points: int, seed: int) -> dict:
    return {
        "path": {"type": "linear", "a": "a", "b": "b", "points": points},
        "dataset": "eval.csv",
        "max_examples": 256,
        "batch_size": 32,
        "seed": seed,
        "device": "cpu",
    }


def run_engine(store_root: Path, points: int) -> dict:
    import torch

    from basin.engine import run
    from basin.spec import parse_spec
    from service.store import Store

    store = Store(store_root)
    s = parse_spec(spec(points, 0)).map_refs(
        lambda r: store.get_checkpoint(r)["id"], lambda r: store.get_dataset(r)["id"]
    )
    torch.set_num_threads(int(os.environ.get("BASIN_TORCH_THREADS", "1")))
    t0 = time.perf_counter()
    doc = run(s, store.resolver(), progress=False)
    total = time.perf_counter() - t0
    return {
        "total_s": round(total, 3),
        "eval_s": doc["timings"]["eval_s"],
        "points_per_s": round(points / doc["timings"]["eval_s"], 3),
    }


def run_service(stack, points: int, seed: int) -> dict:
    t0 = time.perf_counter()
    r = stack.request("POST", "/api/runs", json=spec(points, seed))
    r.raise_for_status()
    run_id = r.json()["id"]
    while True:
        d = stack.request("GET", f"/api/runs/{run_id}").json()
        if d["status"] in ("done", "failed", "cancelled"):
            break
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    if d["status"] != "done":
        raise RuntimeError(f"service run {d['status']}: {d.get('error')}")
    t = d["timings"] or {}
    started_to_done = (d["finished"] - d["started"]) if d.get("started") else None
    return {
        "wall_s": round(wall, 3),
        "points_per_s": round(points / wall, 3),
        "steady_points_per_s": round(points / started_to_done, 3) if started_to_done else None,
        "load_s": t.get("load_s"),
        "eval_s": t.get("eval_s"),
        "first_lease_to_done_s": round(started_to_done, 3) if started_to_done else None,
        "evaluations": d["evaluations"],
        "cached_points": d["cached_points"],
    }


def _median(rows: list[dict], key: str) -> dict:
    """The row with the median ``key`` (plus every rep's value under ``reps``)."""
    ranked = sorted(rows, key=lambda r: r[key])
    return {**ranked[len(ranked) // 2], "reps": [r[key] for r in rows]}


def time_basin_up(tmp: Path) -> float:
    """Seconds from launching ``basin up`` (no demo) to a healthy ``/api/health``."""
    from service import launch as launcher

    port = launcher.free_port()
    env = {**os.environ, "BASIN_DEMO": "0", "BASIN_TORCH_THREADS": "1"}
    basin = Path(sys.executable).parent / "basin"
    t0 = time.perf_counter()
    with open(tmp / "up.log", "wb") as log:
        proc = subprocess.Popen(
            [str(basin), "up", "--port", str(port), "--store", str(tmp / "up-store")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        launcher.wait_healthy(f"http://127.0.0.1:{port}", timeout=120, procs=[proc])
        return time.perf_counter() - t0
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--points", type=int, default=26)
    p.add_argument("--tiny", action="store_true", help="the test suite's tiny BERT (fast)")
    p.add_argument("--reps", type=int, default=3, help="interleaved engine/service repetitions")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.stack import running_stack

    with tempfile.TemporaryDirectory(prefix="basin-svc-bench-") as d:
        tmp = Path(d)
        store_root = tmp / "store"
        facts = build_store(store_root, args.tiny)
        with running_stack(
            store_root,
            workers=1,
            lease_seconds=30,
            ui=False,
            env={"BASIN_TORCH_THREADS": os.environ.get("BASIN_TORCH_THREADS", "1")},
        ) as stack:
            logger.info("service, cold worker...")
            cold = run_service(stack, args.points, seed=1)
            engines, warms = [], []
            for rep in range(args.reps):  # interleaved, so load from other processes hits both
                logger.info("rep %d: engine in-process, then service (1 worker)...", rep + 1)
                engines.append(run_engine(store_root, args.points))
                warms.append(run_service(stack, args.points, seed=2 + rep))
        eng = _median(engines, "points_per_s")
        warm = _median(warms, "steady_points_per_s")
        logger.info("basin up...")
        up_s = time_basin_up(tmp)
    result = {
        "workload": {**facts, "path": "linear", "points": args.points, "examples": 256},
        "engine": eng,
        "service_cold": cold,
        "service_warm": warm,
        # steady state: engine eval-only rate vs the service from first lease to done
        "overhead_ratio": round(eng["points_per_s"] / warm["steady_points_per_s"], 3),
        # end to end, a fresh spec: engine open+eval vs POST → done (incl. the worker's open)
        "end_to_end_ratio": round(warm["wall_s"] / eng["total_s"], 3),
        # load-independent: worker time per point outside Landscape.evaluate (lease, point
        # cache, record, heartbeat), from the median warm run
        "bookkeeping_ms_per_point": round(
            1000 * (warm["first_lease_to_done_s"] - warm["eval_s"]) / args.points, 2
        ),
        "basin_up_s": round(up_s, 2),
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": int(os.environ.get("BASIN_TORCH_THREADS", "1")),
            "python": sys.version.split()[0],
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
