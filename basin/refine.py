"""Adaptive refinement: spend a point budget where the curve or surface changes most.

A run with ``refine: {mode: adaptive, budget: N, levels: L}`` keeps its grid — the
spec's ``points`` (1D) or ``resolution`` (planes) is the FINE grid — but evaluates only
part of it. The coarse grid (every ``2^L``-th node of every axis) comes first; then,
wave after wave, points go where the measured values change most:

- 1D: each measured point's *deviation from linear* is how far its value lies from the
  straight line through its two measured neighbours; an interval between two measured
  points scores the larger deviation of its ends, and the best-scoring intervals are
  split at their midpoint (a node of the fine grid: every gap is a power of two).
- 2D: the measured nodes form a quadtree of cells (a coarse cell is split when its
  centre is measured); a leaf cell scores the range (max − min) of its four corners times
  its side (a large cell may hide a valley its corners do not show), and the
  best-scoring leaves are split into four (centre and edge midpoints).

Scores are in units of the refinement metric's range over the points measured so far,
so they do not depend on the metric's scale. Non-finite values (a diverged loss) count
as the largest finite one. Each wave holds at most ``wave`` new points and the run at
most ``budget``; it ends when the budget is spent or nothing is left to split (every
interval or cell at the fine spacing).

:func:`next_wave` is a pure function of the measured values: the CLI calls it when the
previous wave's last point is in, a worker when it holds the run's finish lock after
the wave's last point was recorded — so the CLI and the service choose the same points.
Points never evaluated are simply absent from the result document. Pure Python.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field

from basin.grid import order_1d, order_2d
from basin.paths.base import FrozenModel


class RefineSpec(FrozenModel):
    """``refine`` in a run spec (absent: the whole grid, uniformly)."""

    mode: Literal["adaptive"] = "adaptive"
    budget: int | None = Field(None, ge=2, description="most points evaluated in all (default: 40 % of the "
                               "fine grid, and at least the coarse grid)")
    levels: int = Field(2, ge=1, le=8, description="halvings from the coarse grid to the fine one: the coarse "
                        "grid is every 2^levels-th node of the spec's grid")
    wave: int | None = Field(None, ge=1, le=10000, description="most points chosen per wave (default: half the "
                             "coarse grid, at most a quarter of the budget beyond it); a wave's points are evaluated in parallel by the service")
    metric: str | None = Field(None, description="the metric whose changes place points (default: the run's "
                               "first metric)")
    until: Literal["budget", "decided"] = Field(
        "budget", description="'budget': refine until the budget is spent; 'decided': stop as soon as the "
        "connectivity verdict of the refinement metric is decided (basin.study.plan.decided: 'not connected' "
        "on the points so far, or 'connected' after at least one wave beyond the coarse grid) — a study's pairs")


def coarse_step(levels: int) -> int:
    return 1 << levels


def check_shape(shape: Sequence[int], levels: int) -> str | None:
    """Why ``shape`` (the fine grid) cannot be refined from a coarse grid ``levels`` halvings
    up, or ``None`` when it can: every axis needs ``k·2^levels + 1`` nodes (k ≥ 1)."""
    s = coarse_step(levels)
    for n in shape:
        if (n - 1) % s or n - 1 < s:
            k = max(1, round((n - 1) / s))
            what = "points" if len(shape) == 1 else "resolution"
            return (f"refine: with levels {levels} every axis of the fine grid needs k·{s} + 1 nodes "
                    f"(the coarse grid is every {s}th node), got {what} {list(shape) if len(shape) > 1 else n}; "
                    f"e.g. {k * s + 1} (coarse {k + 1}) or {(k + 1) * s + 1}")
    return None


def coarse_indices(shape: Sequence[int], levels: int) -> list[int]:
    """The coarse grid's flat indices in the fine grid, coarse to fine
    (:func:`basin.grid.order_1d` / :func:`order_2d` of the coarse grid)."""
    s = coarse_step(levels)
    if len(shape) == 1:
        return [i * s for i in order_1d((shape[0] - 1) // s + 1)]
    nx, ny = shape
    cnx, cny = (nx - 1) // s + 1, (ny - 1) // s + 1
    out = []
    for ci in order_2d(cnx, cny):
        cx, cy = ci % cnx, ci // cnx
        out.append(cy * s * nx + cx * s)
    return out


def budget_of(refine: RefineSpec, shape: Sequence[int]) -> int:
    """The run's point budget: the spec's, or 40 % of the fine grid; never below the coarse
    grid nor above the whole fine grid."""
    n = math.prod(shape)
    coarse = len(coarse_indices(shape, refine.levels))
    want = refine.budget if refine.budget is not None else math.ceil(0.4 * n)
    return max(coarse, min(n, want))


def wave_of(refine: RefineSpec, shape: Sequence[int]) -> int:
    """Most new points per wave: the spec's, or half the coarse grid but small enough that
    the budget beyond the coarse grid is spent in at least four waves (at least 1)."""
    if refine.wave is not None:
        return refine.wave
    coarse = len(coarse_indices(shape, refine.levels))
    spare = budget_of(refine, shape) - coarse
    return max(1, min(coarse // 2, math.ceil(spare / 4)))


def _scaled(values: Mapping[int, float]) -> dict[int, float]:
    """Values divided by their range (non-finite → the largest finite value)."""
    finite = [v for v in values.values() if math.isfinite(v)]
    top = max(finite) if finite else 0.0
    lo = min(finite) if finite else 0.0
    span = (top - lo) or 1.0
    return {i: ((v if math.isfinite(v) else top) - lo) / span for i, v in values.items()}


def first_wave(shape: Sequence[int], levels: int, required: Sequence[int] = ()) -> list[int]:
    """The coarse grid (:func:`coarse_indices`), then the ``required`` nodes not on it (a 1D
    path's checkpoints, α = 0 and 1, when the fine grid has them: the barrier's chord)."""
    coarse = coarse_indices(shape, levels)
    return coarse + [i for i in dict.fromkeys(required) if i not in set(coarse)]


def next_wave(refine: RefineSpec, shape: Sequence[int], measured: Mapping[int, float],
              required: Sequence[int] = ()) -> list[int]:
    """The next flat indices to evaluate, given ``{index: value}`` of the refinement metric
    at every point measured so far; ``[]`` when the run is complete.

    The first wave (:func:`first_wave`: the coarse grid and the ``required`` nodes) comes
    first. Ties go to the larger interval / cell, then the lower index, so the choice is
    deterministic.
    """
    missing = [i for i in first_wave(shape, refine.levels, required) if i not in measured]
    if missing:
        return missing
    left = budget_of(refine, shape) - len(measured)
    if left <= 0:
        return []
    cap = min(left, wave_of(refine, shape))
    v = _scaled(measured)
    if len(shape) == 1:
        return _wave_1d(v, cap)
    # splitting one cell takes up to five points: a wave may hold that many if the budget does
    return _wave_2d(v, shape, refine.levels, min(left, max(cap, 5)))


def _wave_1d(v: Mapping[int, float], cap: int) -> list[int]:
    idx = sorted(v)
    dev = [0.0] * len(idx)
    for j in range(1, len(idx) - 1):
        a, m, b = idx[j - 1], idx[j], idx[j + 1]
        t = (m - a) / (b - a)
        dev[j] = abs(v[m] - ((1 - t) * v[a] + t * v[b]))
    if len(idx) >= 3:
        # an end node: its distance from the line through its two inner neighbours, extrapolated (the
        # end interval has no node outside it; without this a bump next to a checkpoint scored only
        # half its height, through the inner node, and lost to smoother intervals)
        for e, a, b in ((0, 1, 2), (len(idx) - 1, len(idx) - 2, len(idx) - 3)):
            m, p, q = idx[e], idx[a], idx[b]
            t = (m - p) / (q - p)
            dev[e] = abs(v[m] - ((1 - t) * v[p] + t * v[q]))
    cands = []
    for j in range(len(idx) - 1):
        a, b = idx[j], idx[j + 1]
        if b - a > 1:
            cands.append((-max(dev[j], dev[j + 1]), -(b - a), a, (a + b) // 2))
    cands.sort()
    return [mid for *_, mid in cands[:cap]]


def leaves_2d(shape: Sequence[int], levels: int, measured: Any) -> list[tuple[int, int, int]]:
    """The quadtree's leaf cells ``(ix, iy, size)`` over the measured nodes: the coarse
    cells, each split into four while its centre is measured (``measured`` supports ``in``)."""
    nx, ny = shape
    s = coarse_step(levels)
    out: list[tuple[int, int, int]] = []
    stack = [(x, y, s) for y in range(0, ny - 1, s) for x in range(0, nx - 1, s)]
    while stack:
        x, y, size = stack.pop()
        h = size // 2
        if size > 1 and (y + h) * nx + (x + h) in measured:
            stack += [(x, y, h), (x + h, y, h), (x, y + h, h), (x + h, y + h, h)]
        else:
            out.append((x, y, size))
    return out


def _wave_2d(v: Mapping[int, float], shape: Sequence[int], levels: int, cap: int) -> list[int]:
    nx = shape[0]
    cands = []
    for x, y, size in leaves_2d(shape, levels, v):
        if size < 2:
            continue
        corners = [v[yy * nx + xx] for xx, yy in ((x, y), (x + size, y), (x, y + size), (x + size, y + size))]
        cands.append((-(max(corners) - min(corners)) * size, -size, y * nx + x, x, y, size))
    cands.sort()
    chosen: list[int] = []
    seen: set[int] = set()
    for *_, x, y, size in cands:
        h = size // 2
        new = [i for i in ((y + h) * nx + x + h, y * nx + x + h, (y + size) * nx + x + h,
                           (y + h) * nx + x, (y + h) * nx + x + size)
               if i not in v and i not in seen]
        if len(chosen) + len(new) > cap:
            continue  # a cheaper cell (edges shared with split neighbours) may still fit
        chosen += new
        seen.update(new)
        if len(chosen) == cap:
            break
    return chosen


def values_of(points: Sequence[Mapping[str, Any]], metric: str) -> dict[int, float]:
    """``{index: value}`` of ``metric`` from point records (records without it count as NaN)."""
    out: dict[int, float] = {}
    for p in points:
        val = (p.get("metrics") or {}).get(metric)
        out[int(p["index"])] = float(val) if isinstance(val, (int, float)) else math.nan
    return out


def interpolate_2d(shape: Sequence[int], levels: int, z: list[list[float | None]]) -> list[list[float | None]]:
    """``z[iy][ix]`` with the nodes inside each quadtree leaf whose four corners are known
    filled by bilinear interpolation of the corners (measured nodes kept as they are)."""
    nx, ny = shape
    known = {iy * nx + ix for iy in range(ny) for ix in range(nx) if z[iy][ix] is not None}
    out = [row[:] for row in z]
    for x, y, size in leaves_2d(shape, levels, known):
        c = [z[yy][xx] for xx, yy in ((x, y), (x + size, y), (x, y + size), (x + size, y + size))]
        if any(v is None for v in c) or size < 2:
            continue
        z00, z10, z01, z11 = (float(v) for v in c)  # type: ignore[arg-type]
        for j in range(size + 1):
            for i in range(size + 1):
                if out[y + j][x + i] is None:
                    s, t = i / size, j / size
                    out[y + j][x + i] = ((1 - s) * (1 - t) * z00 + s * (1 - t) * z10
                                         + (1 - s) * t * z01 + s * t * z11)
    return out


__all__ = ["RefineSpec", "budget_of", "check_shape", "coarse_indices", "coarse_step", "interpolate_2d",
           "leaves_2d", "next_wave", "values_of", "wave_of"]
