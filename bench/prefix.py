"""Frozen-prefix reuse on the MiniLM demo: seconds per point for scope ``all`` vs ``upper`` vs ``head``.

Workload: the demo's linear path seed 1 → seed 2 (:func:`basin.demo.demo_spec`: all-MiniLM-L6-v2,
6 layers, 256 held-out tweets, batch 32, max_length 64), fp32, ``points`` points. Per repetition,
in one process: a Landscape per scope (opened afresh each repetition), the three taking turns
point by point, each point timed (``all`` has no frozen prefix, so it runs the full pass;
``upper`` replays the output of layer 3, ``head`` the whole encoder's). Then ``upper`` and ``head`` run again with reuse switched off at up
to three of the replayed points: the agreement check (max |difference| of loss, accuracy and every
per-example loss).

``*_steady_s_per_point``: the mean seconds of the points after a run's first — the cost of one
more point, which the targets (``upper`` ≥ 2.5×, ``head`` ≥ 10× fewer than ``all``) are about;
``*_s_per_point``: a run's evaluation seconds / points, its first point (a full pass that records
the prefix) included, so it depends on the number of points. Speedups are ``all`` over
``upper`` / ``head``, medians over repetitions. ``python -m bench.prefix`` runs it
alone and writes ``bench/results/prefix_reuse.json``; ``python -m bench`` includes it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("bench.prefix")

SCOPES = ("all", "upper", "head")
TARGETS = {"upper_speedup_min": 2.5, "head_speedup_min": 10.0, "max_abs_diff_max": 1e-5}
RESULTS = Path(__file__).resolve().parent / "results" / "prefix_reuse.json"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _points(land: Any, points: list[Any], device: str) -> tuple[list[float], list[dict[str, float]], list[list[float]]]:
    """Per point: seconds, metrics, per-example losses (dataset order)."""
    secs, metrics, examples = [], [], []
    for p in points:
        _sync(device)
        t = time.perf_counter()
        m = land.evaluate(p)
        _sync(device)
        secs.append(time.perf_counter() - t)
        metrics.append(m)
        examples.append(list(land.evaluator.examples["loss"]))
    return secs, metrics, examples


def run(demo_dir: Path, *, points: int = 11, reps: int = 3, device: str = "cpu") -> dict[str, Any]:
    """Build (or reuse) the demo in ``demo_dir`` and time the three scopes; the result document."""
    from basin.demo import build_demo, demo_spec
    from basin.engine import Landscape
    from basin.resolve import FileResolver
    from basin.spec import parse_spec

    t0 = time.perf_counter()
    build_demo(demo_dir, progress=False)
    logger.info("demo ready in %s (%.1f s)", demo_dir, time.perf_counter() - t0)
    base = {**demo_spec(demo_dir, points=points), "device": device, "dtype": "float32"}
    resolver = FileResolver(demo_dir.resolve())

    def open_scope(scope: str, prefix: bool) -> Landscape:
        return Landscape.open(parse_spec({**base, "scope": scope}), resolver, prefix=prefix)

    per_point: dict[str, list[float]] = {f"{s}_s_per_point": [] for s in SCOPES}
    steady: dict[str, list[float]] = {f"{s}_steady_s_per_point": [] for s in SCOPES}
    diffs: dict[str, float] = {}
    info: dict[str, Any] = {}
    got: dict[str, tuple[list[Any], list[dict[str, float]], list[list[float]]]] = {}
    for rep in range(reps):
        # fresh Landscapes each repetition (the first point records the prefix again); the three
        # scopes take turns point by point, so load drift on a shared machine hits them alike
        lands = {scope: open_scope(scope, True) for scope in SCOPES}
        try:
            order = lands["all"].points()
            res: dict[str, tuple[list[float], list[dict[str, float]], list[list[float]]]] = {
                scope: ([], [], []) for scope in SCOPES}
            for p in order:
                for scope in SCOPES:
                    secs, metrics, examples = _points(lands[scope], [p], device)
                    res[scope][0].extend(secs)
                    res[scope][1].extend(metrics)
                    res[scope][2].extend(examples)
            for scope in SCOPES:
                info[scope] = lands[scope].prefix_summary()
        finally:
            for land in lands.values():
                land.close()
        for scope in SCOPES:
            secs, metrics, examples = res[scope]
            per_point[f"{scope}_s_per_point"].append(sum(secs) / len(secs))
            steady[f"{scope}_steady_s_per_point"].append(statistics.fmean(secs[1:]) if len(secs) > 1 else secs[0])
            got[scope] = (order, metrics, examples)
        logger.info("rep %d/%d: %s", rep + 1, reps, {k: round(v[-1], 4) for k, v in {**per_point, **steady}.items()})
    # agreement: the full pass (reuse off) at up to three of the replayed points (those after the first)
    for scope in ("upper", "head"):
        order, metrics, examples = got[scope]
        picks = sorted({round(1 + i * (len(order) - 2) / 2) for i in range(3)} & set(range(1, len(order))))
        land = open_scope(scope, False)
        try:
            _, m0, e0 = _points(land, [order[i] for i in picks], device)
        finally:
            land.close()
        d = max(abs(metrics[i][k] - b[k]) for i, b in zip(picks, m0, strict=True) for k in b)
        d = max(d, max(abs(x - y) for i, r0 in zip(picks, e0, strict=True)
                       for x, y in zip(examples[i], r0, strict=True)))
        diffs[scope] = d
    med = {k: statistics.median(v) for k, v in {**per_point, **steady}.items()}
    out: dict[str, Any] = {
        "workload": {"demo": "all-MiniLM-L6-v2 (6 layers) seed 1 → seed 2, linear", "points": points,
                     "examples": base["max_examples"], "batch_size": base["batch_size"],
                     "max_length": base["max_length"], "dtype": "float32", "device": device},
        "reps": reps,
        **{k: round(v, 5) for k, v in med.items()},
        "all_reps": {k: [round(x, 5) for x in v] for k, v in {**per_point, **steady}.items()},
        "upper_speedup": round(med["all_s_per_point"] / med["upper_s_per_point"], 2),
        "head_speedup": round(med["all_s_per_point"] / med["head_s_per_point"], 2),
        "upper_steady_speedup": round(med["all_steady_s_per_point"] / med["upper_steady_s_per_point"], 2),
        "head_steady_speedup": round(med["all_steady_s_per_point"] / med["head_steady_s_per_point"], 2),
        "max_abs_diff_vs_full_pass": diffs,
        "reuse": {k: info[k] for k in SCOPES},
        "targets": TARGETS,
    }
    out["agreement_ok"] = max(diffs.values()) <= TARGETS["max_abs_diff_max"]
    out["targets_met"] = (out["upper_steady_speedup"] >= TARGETS["upper_speedup_min"]
                          and out["head_steady_speedup"] >= TARGETS["head_speedup_min"])
    return out


def print_table(r: dict[str, Any]) -> None:
    w = r["workload"]
    print(f"\nfrozen-prefix reuse — MiniLM demo, {w['points']} points × {w['examples']} tweets, {w['device']}, "
          f"median of {r['reps']}")
    print(f"{'scope':<10}{'s/point':>10}{'speedup':>10}{'steady s/pt':>13}{'speedup':>10}{'max |Δ| vs full':>18}")
    for s in SCOPES:
        sp = "" if s == "all" else f"{r[f'{s}_speedup']:.2f}×"
        ss = "" if s == "all" else f"{r[f'{s}_steady_speedup']:.2f}×"
        d = "" if s == "all" else f"{r['max_abs_diff_vs_full_pass'][s]:.1e}"
        print(f"{s:<10}{r[f'{s}_s_per_point']:>10.4f}{sp:>10}{r[f'{s}_steady_s_per_point']:>13.4f}{ss:>10}{d:>18}")
    print(f"targets: upper ≥ {TARGETS['upper_speedup_min']}×, head ≥ {TARGETS['head_speedup_min']}×, "
          f"(steady): {'met' if r['targets_met'] else 'NOT met'}; |Δ| ≤ {TARGETS['max_abs_diff_max']}: "
          f"{'yes' if r['agreement_ok'] else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    from bench import workload

    ap = argparse.ArgumentParser(prog="python -m bench.prefix", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--points", type=int, default=11)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--demo", type=Path, default=None, help="demo folder (built there when missing; default: "
                    "the bench cache's demo/)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for k, v in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(k, v)
    torch.set_num_threads(args.threads)
    r = run(args.demo or workload.default_cache() / "demo", points=args.points, reps=args.reps, device=args.device)
    r["date"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    r["machine"] = {"torch": torch.__version__, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=1) + "\n")
    print_table(r)
    print(f"\nwrote {args.out}")
    return 0 if r["agreement_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
