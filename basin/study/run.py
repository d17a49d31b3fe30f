"""A study in one process (``basin study spec.yaml``): every pair's run through the one drive
loop (:func:`basin.drive.drive`) with one point cache shared by all pairs, phase by phase
(:func:`basin.study.plan.plan`), then :func:`basin.study.matrix.build`.

The service runs the same pairs as ordinary runs on all workers (``service/jobs/study.py``)
and builds its result with the same :func:`basin.study.matrix.build`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from basin.checkpoints import CheckpointCache
from basin.drive import ListSink, ListSource, MemoryPointCache, PointCache, WaveSource, drive
from basin.resolve import Resolver
from basin.study.matrix import build, cell_of, own_metrics
from basin.study.plan import Pair, StudySpec, full_points, plan


def run_pair(
    spec: StudySpec,
    pair: Pair,
    resolver: Resolver,
    *,
    cache: PointCache,
    checkpoints: CheckpointCache | None = None,
    on_point: Callable[[dict[str, Any], bool], None] | None = None,
) -> dict[str, Any]:
    """One pair's run: ``{points, summary, evaluated, reused}``."""
    from basin.engine import Landscape

    rs = spec.pair_spec(
        pair.a, pair.b, dataset=None if pair.dataset == "main" else spec.datasets[pair.dataset]
    )
    land = Landscape.open(rs, resolver, cache=checkpoints)
    try:
        sink = ListSink()
        source: ListSource | WaveSource = ListSource(land.points())
        if rs.refine is not None:
            source = WaveSource(land.point, lambda: land.next_wave(sink.results))
        stats = drive(land, source, sink, cache=cache, on_progress=on_point)
        summary = land.summary(sink.results)
    finally:
        land.close()
    return {
        "points": sink.results,
        "summary": summary,
        "evaluated": stats.evaluated,
        "reused": stats.reused,
    }


def run_study(
    spec: StudySpec, resolver: Resolver, *, progress: bool = True, cache: PointCache | None = None
) -> dict[str, Any]:
    """Run every pair of ``spec`` in-process; the study's result document (:func:`build`) plus
    ``evaluations``: what was computed (``performed``), what full runs would cost
    (``full_runs``: N(N−1)/2 × the fine grid's points), and each checkpoint's own point's
    evaluations per dataset (``own``: 1 each when sharing worked)."""
    from tqdm.auto import tqdm

    n = len(spec.checkpoints)
    labels = spec.labels()
    pcache = cache if cache is not None else MemoryPointCache()
    ckpts = CheckpointCache()
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    points: dict[tuple[int, int], int] = {}
    own: dict[str, dict[int, dict[str, float]]] = {"main": {}, **{k: {} for k in spec.datasets}}
    own_evals: Counter[tuple[str, int]] = Counter()
    performed = reused = 0
    runs = plan(n, list(spec.datasets))
    t0 = time.perf_counter()
    upper = sum(spec.path.budget if p.dataset == "main" else 2 for p in runs)
    metrics: list[str] = []
    with tqdm(
        total=upper, file=sys.stderr, disable=not progress, desc=spec.name or "study", unit="pt"
    ) as bar:
        for pair in sorted(runs, key=lambda p: p.phase):

            def seen(record: dict[str, Any], cached: bool, pair: Pair = pair) -> None:
                bar.update(1)
                alpha = float(record["coords"]["alpha"])
                if not cached and alpha in (0.0, 1.0):
                    own_evals[(pair.dataset, pair.a if alpha == 0.0 else pair.b)] += 1

            got = run_pair(spec, pair, resolver, cache=pcache, checkpoints=ckpts, on_point=seen)
            performed += got["evaluated"]
            reused += got["reused"]
            own[pair.dataset].update(own_metrics(got["points"], pair.a, pair.b))
            if pair.dataset == "main":
                metrics = metrics or list(got["summary"].get("barrier") or {})
                key = (min(pair.a, pair.b), max(pair.a, pair.b))
                cells[key] = cell_of(got["summary"], metrics)
                points[key] = len(got["points"])
    result = build(
        labels,
        [c.tags for c in spec.checkpoints],
        metrics,
        cells,
        own,
        cluster_metric=spec.cluster_metric,
        points=points,
    )
    result["evaluations"] = {
        "performed": performed,
        "reused": reused,
        "full_runs": full_points(spec),
        "fraction": performed / full_points(spec) if full_points(spec) else None,
        "own": {f"{ds}:{labels[i]}": c for (ds, i), c in sorted(own_evals.items())},
    }
    result["wall_s"] = time.perf_counter() - t0
    result["spec"] = spec.model_dump(mode="json")
    return result


__all__ = ["run_pair", "run_study"]
