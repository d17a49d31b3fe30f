"""Adaptive refinement benchmark: the barrier from ``refine: adaptive`` vs the uniform grid
at the same finest spacing, and how many points each took.

- ``synthetic``: a tilted line with a Gaussian barrier 0.03 wide (the coarse grid's spacing
  is 0.125), centred at several α, on a 129-point fine grid (levels 4: 9 coarse points),
  budget 40 % of the fine grid (51 points). Pure Python (:func:`basin.refine.next_wave`).
- ``demo``: the MiniLM demo's linear path seed 1 → seed 2 (:func:`basin.demo.demo_spec`),
  65-point fine grid (levels 3: 9 coarse points), budget 26 (40 %). The uniform grid is
  evaluated once with a point cache; the adaptive run then goes through the engine's own
  loop (:class:`basin.drive.WaveSource`, :meth:`basin.engine.Landscape.next_wave`) over the
  same cache, so its points cost nothing extra and carry the same values.

Target: barrier within 1e-3 of the uniform grid's with ≤ 40 % of its points.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench.refine")

TARGET_ERROR = 1e-3
TARGET_FRACTION = 0.40


def _narrow(a: float, centre: float, width: float = 0.03) -> float:
    return 0.3 + 0.2 * a + math.exp(-(((a - centre) / width) ** 2))


def synthetic(n: int = 129, levels: int = 4, centres: tuple[float, ...] = (0.37, 0.41, 0.52, 0.6, 0.83)) -> dict:
    from basin.analysis.barrier import barrier
    from basin.grid import linspace
    from basin.refine import RefineSpec, next_wave

    xs = linspace(0.0, 1.0, n)
    budget = int(TARGET_FRACTION * n)
    rows = []
    for c in centres:
        uniform = barrier([(x, _narrow(x, c)) for x in xs], lo=0.0, hi=1.0)
        got: dict[int, float] = {}
        r = RefineSpec.model_validate({"budget": budget, "levels": levels})
        while wave := next_wave(r, (n,), got):
            got.update({i: _narrow(xs[i], c) for i in wave})
        found = barrier([(xs[i], v) for i, v in got.items()], lo=0.0, hi=1.0)
        coarse = barrier([(xs[i], _narrow(xs[i], c)) for i in range(0, n, 1 << levels)], lo=0.0, hi=1.0)
        assert uniform is not None and found is not None and coarse is not None
        rows.append({"centre": c, "uniform_points": n, "adaptive_points": len(got),
                     "uniform_barrier": round(uniform["value"], 6), "adaptive_barrier": round(found["value"], 6),
                     "coarse_barrier": round(coarse["value"], 6),
                     "error": abs(found["value"] - uniform["value"])})
    worst = max(r["error"] for r in rows)
    frac = max(r["adaptive_points"] for r in rows) / n
    return {"workload": {"fine_points": n, "levels": levels, "budget": budget, "width": 0.03},
            "curves": rows, "max_error": worst, "point_fraction": round(frac, 3),
            "ok": worst <= TARGET_ERROR and frac <= TARGET_FRACTION}


def demo(root: Path, *, device: str = "cpu", points: int = 65, levels: int = 3) -> dict:
    from basin.demo import build_demo, demo_spec
    from basin.drive import ListSink, ListSource, MemoryPointCache, WaveSource, drive
    from basin.engine import Landscape
    from basin.resolve import FileResolver
    from basin.spec import parse_spec

    build_demo(root, progress=False)
    budget = int(TARGET_FRACTION * points)
    base = {**demo_spec(root, points=points), "device": device, "dtype": "float32"}
    uniform_spec = parse_spec(base)
    adaptive_spec = parse_spec({**base, "refine": {"mode": "adaptive", "budget": budget, "levels": levels}})
    resolver = FileResolver(Path(root).resolve())
    cache = MemoryPointCache()
    t0 = time.perf_counter()
    with Landscape.open(uniform_spec, resolver) as land:
        sink = ListSink()
        drive(land, ListSource(land.points()), sink, cache=cache)
        uniform_s = time.perf_counter() - t0
        uniform = land.summary(sink.results)["barrier"]
    with Landscape.open(adaptive_spec, resolver) as land:
        sink = ListSink()
        stats = drive(land, WaveSource(land.point, lambda: land.next_wave(sink.results)), sink, cache=cache)
        adaptive = land.summary(sink.results)["barrier"]
    assert stats.evaluated == 0, "the adaptive run's points are among the uniform grid's"
    rows = {}
    for m in ("loss", "accuracy"):
        rows[m] = {"uniform_barrier": round(uniform[m]["value"], 6), "adaptive_barrier": round(adaptive[m]["value"], 6),
                   "error": abs(uniform[m]["value"] - adaptive[m]["value"]),
                   "uniform_alpha": uniform[m]["alpha"], "adaptive_alpha": adaptive[m]["alpha"]}
    n = len(sink.results)
    return {"workload": {"path": "MiniLM demo, linear seed 1 → seed 2", "fine_points": points, "levels": levels,
                         "budget": budget, "examples": uniform_spec.max_examples, "device": device},
            "uniform_points": points, "adaptive_points": n, "point_fraction": round(n / points, 3),
            "uniform_eval_s": round(uniform_s, 2), "barrier": rows,
            "ok": rows["loss"]["error"] <= TARGET_ERROR and n / points <= TARGET_FRACTION}


def run(root: Path, *, device: str = "cpu", with_demo: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"synthetic": synthetic(), "targets": {"max_error": TARGET_ERROR,
                                                               "max_point_fraction": TARGET_FRACTION}}
    if with_demo:
        out["demo"] = demo(root, device=device)
    out["ok"] = out["synthetic"]["ok"] and out.get("demo", {"ok": True})["ok"]
    return out


def print_table(r: dict) -> None:
    s = r["synthetic"]
    print(f"\nadaptive refinement — synthetic narrow barrier (width 0.03), {s['workload']['fine_points']}-point "
          f"fine grid, budget {s['workload']['budget']}")
    print(f"{'centre':>8}{'points':>10}{'uniform':>12}{'adaptive':>12}{'coarse':>12}{'error':>10}")
    for c in s["curves"]:
        print(f"{c['centre']:>8}{c['adaptive_points']:>5}/{c['uniform_points']:<4}{c['uniform_barrier']:>12.6f}"
              f"{c['adaptive_barrier']:>12.6f}{c['coarse_barrier']:>12.6f}{c['error']:>10.1e}")
    d = r.get("demo")
    if d:
        print(f"demo ({d['workload']['path']}): {d['adaptive_points']}/{d['uniform_points']} points "
              f"({100 * d['point_fraction']:.0f} %); " + ", ".join(
                  f"{m} barrier {v['adaptive_barrier']:.6f} vs {v['uniform_barrier']:.6f} (error {v['error']:.1e})"
                  for m, v in d["barrier"].items()))
    print(f"targets: error ≤ {r['targets']['max_error']}, points ≤ {100 * r['targets']['max_point_fraction']:.0f} %"
          f" — {'met' if r['ok'] else 'NOT met'}")
