"""``python -m bench.tune_workers``: members per hour of a tune family with one worker vs two.

Workload: the test suite's tiny BERT (3 layers, hidden 32) as the base, a family of
``--seeds`` seeds × {full fine-tuning, LoRA}, ``--steps`` steps of batch 16, a checkpoint every
``--steps // 3`` steps, on 256 synthetic sentences. For each worker count, a fresh real stack
(``tests.stack.running_stack``: redis-server, Celery workers with the solo pool, uvicorn)
over a fresh copy of the store; ``POST /api/tunes`` → status ``done`` polled every 100 ms.
``members_per_hour`` = members ÷ that wall time × 3600; ``speedup`` = two workers' rate ÷
one's (2.0 = perfect on a machine with a free core per worker). One torch thread a worker.

Results: printed as JSON and written to ``bench/results/tune_workers.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

logger = logging.getLogger("bench.tune_workers")
RESULTS = Path(__file__).resolve().parent / "results" / "tune_workers.json"


def build_store(root: Path) -> None:
    from service.store import Store
    from tests import factories

    store = Store(root)
    tok = factories.make_tokenizer("bert")
    base = factories.save(factories.init_classifier(0), root.parent / "base", tok)
    store.add_checkpoint_dir(base, name="base")
    store.add_dataset(
        factories.write_classification_dataset(root.parent / "train.csv", n=256), name="train.csv"
    )


def family(seeds: int, steps: int) -> dict:
    return {
        "base": "base",
        "dataset": "train.csv",
        "family": "bench",
        "seeds": list(range(seeds)),
        "methods": [{"name": "full"}, {"name": "lora", "learning_rates": [1e-3]}],
        "learning_rates": [1e-3],
        "steps": steps,
        "save_every": max(1, steps // 3),
        "batch_size": 16,
        "max_length": 32,
        "max_examples": 256,
        "device": "cpu",
    }


def measure(store_root: Path, tmp: Path, workers: int, body: dict) -> dict:
    from tests.stack import running_stack

    root = tmp / f"w{workers}" / "store"
    shutil.copytree(store_root, root)
    with running_stack(root, workers=workers, lease_seconds=30, ui=False) as stack:
        t0 = time.perf_counter()
        r = stack.request("POST", "/api/tunes", json=body)
        r.raise_for_status()
        tune_id = r.json()["id"]
        while True:
            d = stack.request("GET", f"/api/tunes/{tune_id}").json()
            if d["status"] in ("done", "failed", "cancelled"):
                break
            time.sleep(0.1)
        wall = time.perf_counter() - t0
    if d["status"] != "done":
        raise RuntimeError(f"tune job {d['status']}: {d.get('error')}")
    n = d["members"]
    used = sorted({m["worker"] for m in d["member_list"]})
    return {
        "workers": workers,
        "members": n,
        "wall_s": round(wall, 2),
        "members_per_hour": round(n / wall * 3600, 1),
        "workers_used": used,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    body = family(args.seeds, args.steps)
    with tempfile.TemporaryDirectory(prefix="basin-tune-bench-") as d:
        tmp = Path(d)
        build_store(tmp / "store")
        rows = []
        for workers in (1, 2):
            logger.info("%d worker(s)...", workers)
            rows.append(measure(tmp / "store", tmp, workers, body))
    result = {
        "workload": {
            "base": "tiny BERT (3 layers, hidden 32)",
            "family": "seeds × {full, lora}",
            **{k: body[k] for k in ("seeds", "steps", "save_every", "batch_size", "max_examples")},
        },
        "cpu_count": os.cpu_count(),
        "runs": rows,
        "speedup": round(rows[1]["members_per_hour"] / rows[0]["members_per_hour"], 2),
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
