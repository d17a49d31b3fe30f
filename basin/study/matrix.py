"""A study's result from its pairs' runs: the barrier matrix with a verdict per cell, its
hierarchical clustering (leaf order, dendrogram), the clusters with their members' metrics,
within- vs between-group barriers per tag, the instability curve, and JSON / CSV exports.

Every number here comes from the pairs' run summaries (:meth:`basin.engine.Landscape.summary`:
the barrier, its 95 % interval from the studentized simultaneous band and the calibrated
verdict, :mod:`basin.analysis.connectivity`) and the checkpoints' own points; nothing is
re-estimated. numpy and scipy; no torch.

Clusters: average-linkage clustering of the barrier matrix (the estimates, ≥ 0) orders the
leaves and draws the dendrogram; a cluster is a largest subtree of it in which no pair is
called ``not connected`` (a barrier above 0 at the 95 % level). A pair the data cannot decide
(``inconclusive``) does not split a cluster: the clusters are the groups the study could not
tell apart, not a claim that their members are connected.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

VERDICTS = ("connected", "not connected", "inconclusive")


def cell_of(summary: Mapping[str, Any] | None, metrics: Sequence[str]) -> dict[str, Any]:
    """``{metric: {value, ci, verdict, tolerance, alpha, examples_to_decide?}}`` from a run's summary."""
    out: dict[str, Any] = {}
    found = (summary or {}).get("barrier") or {}
    for m in metrics:
        b = found.get(m)
        if not isinstance(b, Mapping) or not isinstance(b.get("value"), (int, float)):
            continue
        e = {
            k: b.get(k)
            for k in ("value", "ci", "verdict", "tolerance", "alpha")
            if b.get(k) is not None
        }
        if b.get("examples_to_decide") is not None:
            e["examples_to_decide"] = b["examples_to_decide"]
        out[m] = e
    return out


def own_metrics(points: Sequence[Mapping[str, Any]], a: int, b: int) -> dict[int, dict[str, float]]:
    """Checkpoint ``a``'s metrics (the record at α = 0) and ``b``'s (α = 1) from a pair's points."""
    out: dict[int, dict[str, float]] = {}
    for p in points:
        alpha = float((p.get("coords") or {}).get("alpha", math.nan))
        who = a if alpha == 0.0 else b if alpha == 1.0 else None
        if who is not None:
            out[who] = {
                k: float(v)
                for k, v in (p.get("metrics") or {}).items()
                if isinstance(v, (int, float))
            }
    return out


def _nan(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) else math.nan


def matrices(
    n: int, cells: Mapping[tuple[int, int], Mapping[str, Any]], metrics: Sequence[str]
) -> dict[str, Any]:
    """``{metric: {value, lo, hi, verdict}}``, each an n × n list (symmetric; the diagonal 0 and
    ``connected``; a pair not yet measured ``None``)."""
    out: dict[str, Any] = {}
    for m in metrics:
        val: list[list[float | None]] = [
            [0.0 if i == j else None for j in range(n)] for i in range(n)
        ]
        lo = [row[:] for row in val]
        hi = [row[:] for row in val]
        ver: list[list[str | None]] = [
            ["connected" if i == j else None for j in range(n)] for i in range(n)
        ]
        for (i, j), cell in cells.items():
            e = cell.get(m)
            if not e:
                continue
            ci = e.get("ci") or [None, None]
            for x, y in ((i, j), (j, i)):
                val[x][y] = float(e["value"])
                lo[x][y], hi[x][y] = ci[0], ci[1]
                ver[x][y] = e.get("verdict")
        out[m] = {"value": val, "lo": lo, "hi": hi, "verdict": ver}
    return out


def cluster(
    names: Sequence[str],
    value: Sequence[Sequence[float | None]],
    verdict: Sequence[Sequence[str | None]],
) -> dict[str, Any] | None:
    """Average-linkage clustering of a complete barrier matrix: ``{order, linkage, dendrogram,
    clusters}`` (``None`` while a pair is missing or n < 2). ``clusters`` are lists of
    indices: the largest subtrees with no ``not connected`` pair inside."""
    import numpy as np
    from scipy.cluster import hierarchy
    from scipy.spatial.distance import squareform

    n = len(names)
    if n < 2 or any(value[i][j] is None for i in range(n) for j in range(n)):
        return None
    d = np.array(
        [[max(0.0, _nan(value[i][j])) if i != j else 0.0 for j in range(n)] for i in range(n)]
    )
    d = np.nan_to_num((d + d.T) / 2, nan=float(np.nanmax(d)) if np.isfinite(d).any() else 0.0)
    z = hierarchy.linkage(squareform(d, checks=False), method="average", optimal_ordering=n > 2)
    den = hierarchy.dendrogram(z, no_plot=True, labels=list(range(n)))
    members: list[list[int]] = [[i] for i in range(n)]
    ok: list[bool] = [True] * n
    for left, right, _, _ in z:
        lm, rm = members[int(left)], members[int(right)]
        clean = (
            ok[int(left)]
            and ok[int(right)]
            and all(verdict[x][y] != "not connected" for x in lm for y in rm)
        )
        members.append(lm + rm)
        ok.append(clean)
    groups: list[list[int]] = []
    stack = [len(members) - 1]
    while stack:
        k = stack.pop()
        if ok[k]:
            groups.append(sorted(members[k]))
        else:
            stack += [int(z[k - n][1]), int(z[k - n][0])]
    order = [int(i) for i in den["leaves"]]
    groups.sort(key=lambda g: min(order.index(i) for i in g))
    return {
        "order": order,
        "linkage": [[int(a), int(b), float(h), int(c)] for a, b, h, c in z],
        "dendrogram": {"icoord": den["icoord"], "dcoord": den["dcoord"], "leaves": order},
        "clusters": groups,
    }


def _mean(values: Sequence[float]) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def cluster_rows(
    groups: Sequence[Sequence[int]],
    names: Sequence[str],
    own: Mapping[str, Mapping[int, Mapping[str, float]]],
) -> list[dict[str, Any]]:
    """Each cluster's members and their mean metrics per dataset (``own[dataset][i][metric]``)."""
    out = []
    for k, g in enumerate(groups):
        per: dict[str, dict[str, float | None]] = {}
        for ds, by in own.items():
            keys = sorted({m for i in g for m in by.get(i, {})})
            per[ds] = {m: _mean([by[i][m] for i in g if m in by.get(i, {})]) for m in keys}
        out.append(
            {"id": k + 1, "members": list(g), "names": [names[i] for i in g], "metrics": per}
        )
    return out


def _stats(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    vals = [float(r["value"]) for r in rows]
    return {
        "n": len(vals),
        "mean": statistics.fmean(vals) if vals else None,
        "median": statistics.median(vals) if vals else None,
        "min": min(vals) if vals else None,
        "max": max(vals) if vals else None,
        "verdicts": {v: sum(1 for r in rows if r.get("verdict") == v) for v in VERDICTS},
        "pairs": list(rows),
    }


def groups(
    tags: Sequence[Mapping[str, Any]],
    cells: Mapping[tuple[int, int], Mapping[str, Any]],
    metric: str,
) -> dict[str, Any]:
    """Per tag key (seed, order, split, method, step, …): the barriers of pairs whose two members
    share its value (within) and of pairs whose values differ (between), as in Qin et al.'s
    comparisons. Only pairs where both members carry the tag count; a tag whose value no two
    checkpoints share, or that all share, has one side empty."""
    keys = sorted({k for t in tags for k in t if k != "pair"})
    out: dict[str, Any] = {}
    for k in keys:
        within: list[dict[str, Any]] = []
        between: list[dict[str, Any]] = []
        for (i, j), cell in sorted(cells.items()):
            e = cell.get(metric)
            if not e or k not in tags[i] or k not in tags[j]:
                continue
            row = {
                "a": i,
                "b": j,
                "value": float(e["value"]),
                "ci": e.get("ci"),
                "verdict": e.get("verdict"),
                "values": [tags[i][k], tags[j][k]],
            }
            (within if tags[i][k] == tags[j][k] else between).append(row)
        if within or between:
            out[k] = {"within": _stats(within), "between": _stats(between)}
    return out


def instability(
    tags: Sequence[Mapping[str, Any]],
    cells: Mapping[tuple[int, int], Mapping[str, Any]],
    metric: str,
) -> list[dict[str, Any]]:
    """Frankle et al.'s instability curve: for checkpoints tagged ``step`` (the step their
    training was spawned from) and ``pair`` (which twin group they belong to), the barrier
    between the two members of each (step, pair) group, sorted by step, with its interval and
    verdict. A group with more than two members gives each of its pairs."""
    byg: dict[tuple[str, str], list[int]] = {}
    for i, t in enumerate(tags):
        if "step" in t and "pair" in t:
            byg.setdefault((str(t["step"]), str(t["pair"])), []).append(i)
    out = []
    for (_, pair), idx in byg.items():
        for x in range(len(idx)):
            for y in range(x + 1, len(idx)):
                i, j = sorted((idx[x], idx[y]))
                e = (cells.get((i, j)) or {}).get(metric)
                step = tags[i]["step"]
                out.append(
                    {
                        "step": step,
                        "pair": pair,
                        "a": i,
                        "b": j,
                        "value": None if not e else float(e["value"]),
                        "ci": None if not e else e.get("ci"),
                        "verdict": None if not e else e.get("verdict"),
                    }
                )
    out.sort(
        key=lambda r: (
            _nan(r["step"]) if isinstance(r["step"], (int, float)) else math.inf,
            str(r["step"]),
            r["pair"],
        )
    )
    return out


def build(
    names: Sequence[str],
    tags: Sequence[Mapping[str, Any]],
    metrics: Sequence[str],
    cells: Mapping[tuple[int, int], Mapping[str, Any]],
    own: Mapping[str, Mapping[int, Mapping[str, float]]],
    *,
    cluster_metric: str = "loss",
    runs: Mapping[tuple[int, int], str] | None = None,
    points: Mapping[tuple[int, int], int] | None = None,
) -> dict[str, Any]:
    """The study's result document from its pairs' cells (``{(i, j): cell_of(...)}``, i < j),
    the checkpoints' own metrics per dataset, and (service) each pair's run id and point count."""
    n = len(names)
    cells = {(min(i, j), max(i, j)): c for (i, j), c in cells.items()}
    mats = matrices(n, cells, metrics)
    cm = cluster_metric if cluster_metric in mats else (list(mats)[0] if mats else None)
    clus = cluster(names, mats[cm]["value"], mats[cm]["verdict"]) if cm else None
    pairs = []
    for (i, j), c in sorted(cells.items()):
        row: dict[str, Any] = {"a": i, "b": j, "barrier": dict(c)}
        if runs and (i, j) in runs:
            row["run"] = runs[(i, j)]
        if points and (i, j) in points:
            row["points"] = points[(i, j)]
        pairs.append(row)
    return {
        "checkpoints": [
            {
                "index": i,
                "name": names[i],
                "tags": dict(tags[i]),
                "metrics": {ds: dict(by.get(i, {})) for ds, by in own.items()},
            }
            for i in range(n)
        ],
        "metrics": list(metrics),
        "cluster_metric": cm,
        "matrix": mats,
        "pairs": pairs,
        "complete": len(cells) == n * (n - 1) // 2,
        "order": clus["order"] if clus else list(range(n)),
        "linkage": clus["linkage"] if clus else None,
        "dendrogram": clus["dendrogram"] if clus else None,
        "clusters": cluster_rows(clus["clusters"], names, own) if clus else [],
        "groups": groups(tags, cells, cm) if cm else {},
        "instability": instability(tags, cells, cm) if cm else [],
    }


def to_csv(result: Mapping[str, Any], table: str) -> str:
    """One table of a study's result as CSV: ``matrix`` (one row per pair and metric),
    ``clusters`` (one row per member, with its metrics per dataset) or ``groups`` (one row per
    pair and tag: within / between)."""
    buf = io.StringIO()
    w = csv.writer(buf)
    names = [c["name"] for c in result["checkpoints"]]
    if table == "matrix":
        w.writerow(["a", "b", "metric", "barrier", "ci_low", "ci_high", "verdict", "points", "run"])
        for p in result["pairs"]:
            for m, e in p["barrier"].items():
                ci = e.get("ci") or ["", ""]
                w.writerow(
                    [
                        names[p["a"]],
                        names[p["b"]],
                        m,
                        e["value"],
                        ci[0],
                        ci[1],
                        e.get("verdict", ""),
                        p.get("points", ""),
                        p.get("run", ""),
                    ]
                )
    elif table == "clusters":
        cols = sorted(
            {(ds, m) for c in result["checkpoints"] for ds, by in c["metrics"].items() for m in by}
        )
        w.writerow(["cluster", "checkpoint", *[f"{m} ({ds})" for ds, m in cols]])
        for cl in result["clusters"]:
            for i in cl["members"]:
                mets = result["checkpoints"][i]["metrics"]
                w.writerow([cl["id"], names[i], *[mets.get(ds, {}).get(m, "") for ds, m in cols]])
    elif table == "groups":
        w.writerow(["tag", "side", "a", "b", "value_a", "value_b", "barrier", "verdict"])
        for tag, g in result["groups"].items():
            for side in ("within", "between"):
                for r in g[side]["pairs"]:
                    w.writerow(
                        [
                            tag,
                            side,
                            names[r["a"]],
                            names[r["b"]],
                            *r["values"],
                            r["value"],
                            r.get("verdict", ""),
                        ]
                    )
    else:
        raise ValueError(f"no table {table!r} (matrix, clusters, groups)")
    return buf.getvalue()


__all__ = [
    "VERDICTS",
    "build",
    "cell_of",
    "cluster",
    "cluster_rows",
    "groups",
    "instability",
    "matrices",
    "own_metrics",
    "to_csv",
]
