"""Loss and accuracy barriers along a 1D path (Frankle et al. 2020).

With endpoints α₀ < α₁ (α = 0 and 1 when inside the evaluated range, else the
range's ends) and s = (α − α₀)/(α₁ − α₀), the chord is ℓ(α) = (1−s)·L(α₀) + s·L(α₁).

- loss barrier  = max over evaluated α in [α₀, α₁] of L(θ(α)) − ℓ(α)
- accuracy barrier = max over the same α of ℓ_acc(α) − Acc(θ(α))  (the largest drop
  below the straight line between the endpoints' accuracies)

Both are ≥ 0 when the endpoints are among the points (the chord meets the curve there).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_EPS = 1e-9


def _endpoint(alphas: Sequence[float], target: float, lo: float, hi: float, fallback: float) -> float:
    if lo - _EPS <= target <= hi + _EPS:
        best = min(alphas, key=lambda a: abs(a - target))
        if abs(best - target) <= 1e-6 * max(1.0, hi - lo):
            return best
    return fallback


def barrier(
    curve: Sequence[tuple[float, float]], *, lo: float, hi: float, higher_is_worse: bool = True
) -> dict[str, float] | None:
    """Barrier of one metric; ``curve`` = [(α, value)] (any order). ``None`` if endpoints are missing.

    Returns ``{"value", "alpha", "start", "end"}``: the largest excess over the chord (for a
    loss; the largest drop below it when ``higher_is_worse`` is False), the α where it occurs,
    and the endpoints α₀, α₁ used.
    """
    pts = sorted((float(a), float(v)) for a, v in curve)
    if len(pts) < 2:
        return None
    alphas = [a for a, _ in pts]
    a0 = _endpoint(alphas, 0.0, lo, hi, lo)
    a1 = _endpoint(alphas, 1.0, lo, hi, hi)
    val = dict(pts)
    if a0 not in val or a1 not in val or a1 <= a0:
        return None
    v0, v1 = val[a0], val[a1]
    best: tuple[float, float] | None = None
    for a, v in pts:
        if a < a0 - _EPS or a > a1 + _EPS:
            continue
        s = (a - a0) / (a1 - a0)
        chord = (1 - s) * v0 + s * v1
        excess = (v - chord) if higher_is_worse else (chord - v)
        if best is None or excess > best[0]:
            best = (excess, a)
    assert best is not None
    return {"value": best[0], "alpha": best[1], "start": a0, "end": a1}


def barriers(results: Sequence[dict[str, Any]], metrics: Sequence[str], lo: float, hi: float) -> dict:
    """``{metric: barrier}`` for ``loss`` (excess over the chord) and ``accuracy`` (drop below it)."""
    out: dict[str, Any] = {}
    for m, worse_up in (("loss", True), ("accuracy", False)):
        if m not in metrics:
            continue
        curve = [(r["coords"]["alpha"], r["metrics"][m]) for r in results if m in r.get("metrics", {})]
        b = barrier(curve, lo=lo, hi=hi, higher_is_worse=worse_up)
        if b is not None:
            out[m] = b
    return out
