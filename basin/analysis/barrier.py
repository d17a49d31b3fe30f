"""Barriers along a 1D path (Frankle et al. 2020): the one implementation, used by the
engine's summary and by the figures.

With endpoints α₀ < α₁ (α = 0 and 1 when inside the evaluated range, else the
range's ends) and s = (α − α₀)/(α₁ − α₀), the chord is ℓ(α) = (1−s)·m(α₀) + s·m(α₁).

- a metric where lower is better (loss, perplexity):
  barrier = max over evaluated α in [α₀, α₁] of m(θ(α)) − ℓ(α)
- a metric where higher is better (accuracy, F1):
  barrier = max over the same α of ℓ(α) − m(θ(α))  (the largest drop below the
  straight line between the endpoints' values)

The direction comes from the metric registry (:attr:`basin.metrics.Metric.higher_is_better`).
Both are ≥ 0 when the endpoints are among the points (the chord meets the curve there).

When the range excludes α = 0 or α = 1 the chord runs between the range's ends, not
between the checkpoints: that is a *partial-range barrier*, not Frankle et al.'s. Its
entry says ``"partial": true`` and the summary text and figures call it so
(:func:`barrier_label`).
Pure Python: no torch.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from basin.metrics import METRICS
from basin.metrics import fmt_number as fmt_number  # re-exported: it lived here

_EPS = 1e-9


def _endpoint(alphas: Sequence[float], target: float, lo: float, hi: float, fallback: float) -> float:
    if lo - _EPS <= target <= hi + _EPS:
        best = min(alphas, key=lambda a: abs(a - target))
        if abs(best - target) <= 1e-6 * max(1.0, hi - lo):
            return best
    return fallback


def chord_barrier(
    curve: Iterable[tuple[float, float]], start: tuple[float, float], end: tuple[float, float], *,
    higher_is_better: bool = False,
) -> dict[str, float] | None:
    """Largest excess of ``curve`` over the chord from ``start`` = (α₀, m₀) to ``end`` = (α₁, m₁).

    ``curve`` is ``[(α, value)]`` in ascending α (ties: the first wins); only α between
    α₀ and α₁ count. The excess is m(α) − ℓ(α), or ℓ(α) − m(α) when ``higher_is_better``.
    Returns ``{"value", "alpha"}``, or ``None`` when α₀ = α₁ or no point lies between them.
    """
    (a0, v0), (a1, v1) = start, end
    if a1 == a0:
        return None
    lo, hi = min(a0, a1), max(a0, a1)
    best: dict[str, float] | None = None
    for a, v in curve:
        if a < lo - _EPS or a > hi + _EPS:
            continue
        s = (a - a0) / (a1 - a0)
        chord = (1 - s) * v0 + s * v1
        excess = (chord - v) if higher_is_better else (v - chord)
        if best is None or excess > best["value"]:
            best = {"value": excess, "alpha": a}
    return best


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
    best = chord_barrier(pts, (a0, val[a0]), (a1, val[a1]), higher_is_better=not higher_is_worse)
    assert best is not None  # a0 itself lies in [a0, a1]
    return {**best, "start": a0, "end": a1, "partial": not (abs(a0) <= _EPS and abs(a1 - 1.0) <= _EPS)}


def is_partial(entry: Any) -> bool:
    """Whether a stored barrier entry's chord runs between range ends rather than α = 0 and 1.

    Reads ``partial`` when present, else ``start``/``end`` (documents written before it).
    """
    if not isinstance(entry, dict):
        return False
    if "partial" in entry:
        return bool(entry["partial"])
    s, e = entry.get("start"), entry.get("end")
    if isinstance(s, (int, float)) and isinstance(e, (int, float)):
        return not (abs(s) <= _EPS and abs(e - 1.0) <= _EPS)
    return False


def barrier_label(entry: Any) -> str:
    """``barrier``, or ``partial-range barrier (chord α = 0.2 → 0.6)`` for a partial one."""
    if not is_partial(entry):
        return "barrier"
    return f"partial-range barrier (chord α = {float(entry['start']):.3g} → {float(entry['end']):.3g})"


#: A barrier within this fraction of the metric's magnitude (at least 1) is "no barrier": the
#: metric values are float32 sums, so a flat or convex curve can sit 1e-7 above its chord.
BARRIER_RTOL = 1e-6


def is_no_barrier(value: float, magnitude: float = 1.0) -> bool:
    """Whether a barrier ``value`` is zero within its precision (or negative, which only
    rounding makes: the chord meets the curve at its ends). ``magnitude``: the largest
    absolute value of the metric along the path (the precision is relative to it)."""
    return value <= BARRIER_RTOL * max(1.0, abs(magnitude))


def _fixed(v: float, places: int = 2) -> str:
    text = f"{v:.{places}f}"
    return text[1:] if text.startswith("-") and float(text) == 0.0 else text


def barrier_text(entry: Any, metric: str, *, magnitude: float = 1.0) -> str:
    """What a figure, the run page and the report say about one barrier entry ``{value,
    alpha?, start?, end?, partial?}`` (metric units, percent for fractions):

    ``barrier 0.123 nats at α = 0.50``, ``partial-range barrier (chord α = 0.2 → 0.8) 4.5 pts
    at α = 0.40``, or ``no barrier`` (``no partial-range barrier (…)``) when the value is
    zero within its precision (:func:`is_no_barrier`). With its 95 % interval ``ci`` (runs
    with per-example results) it follows the value: ``barrier 0.123 [0.08, 0.17] nats at α =
    0.50``, ``no barrier (95 % [0, 0.011] nats)`` (plain ``no barrier`` when the interval's
    upper end is no barrier either).
    """
    what = barrier_label(entry)
    value = float(entry["value"])
    m = METRICS.get(metric)
    scale = m.scale if m is not None else 1.0
    unit = f" {m.delta_unit}" if m is not None and m.delta_unit else ""
    lims = entry.get("ci") if isinstance(entry, dict) else None  # the barrier's 95 % interval
    ci = ""
    if isinstance(lims, (list, tuple)) and len(lims) == 2 and all(isinstance(v, (int, float)) for v in lims):
        ci = f" [{fmt_number(float(lims[0]) * scale)}, {fmt_number(float(lims[1]) * scale)}]"
    if is_no_barrier(value, magnitude):
        # an interval that is itself all "no barrier" ([0, 0]) says nothing more: leave it out
        if ci and isinstance(lims, (list, tuple)) and is_no_barrier(float(lims[1]), magnitude):
            ci = ""
        return f"no {what}" + (f" (95 %{ci}{unit})" if ci else "")
    alpha = entry.get("alpha") if isinstance(entry, dict) else None
    where = f" at α = {_fixed(float(alpha))}" if isinstance(alpha, (int, float)) else ""
    return f"{what} {fmt_number(value * scale)}{ci}{unit}{where}"


#: What a barrier without an interval adds to its words (sample perplexity, sentiment, distinct-n:
#: a handful of prompts gives no calibrated band, so there is no verdict either).
NO_INTERVAL = " (on these points only: no interval, so no verdict)"


def barrier_sentence(entry: Any, metric: str, *, magnitude: float = 1.0,
                     path_type: str | None = "linear") -> str:
    """The barrier in words, as the run page, the report, ``basin eval`` and ``basin fit`` say
    it: :func:`barrier_text` and, when the entry has its calibrated interval, the verdict
    (:func:`basin.analysis.uncertainty.connectivity_verdict`, which says what "connected"
    means) — "linearly connected" for a straight line, "connected along this curve" for a
    Bezier or polychain path. ``barrier 0.004 [0, 0.011] nats at α = 0.50 — linearly
    connected: the barrier is below 0.02 nats at the 95 % level``. An interval stored by
    the older percentile bootstrap of the maximum (miscalibrated at 0) gets no verdict."""
    from basin.analysis.uncertainty import connectivity_verdict

    text = _coordinate(barrier_text(entry, metric, magnitude=magnitude), path_type)
    if not isinstance(entry, dict) or not isinstance(entry.get("ci"), (list, tuple)):
        # a generation metric's (or an old run's) barrier has no interval: it describes the
        # points drawn, and nothing is concluded from it
        return text + NO_INTERVAL + chosen_note(entry, metric)
    said = connectivity_verdict(entry, path_type, metric=metric)
    if said is None:
        return text + " — no verdict (an interval from an older, miscalibrated method: re-run for one)" + chosen_note(entry, metric)
    return f"{text} — {said}" + chosen_note(entry, metric)


def _coordinate(text: str, path_type: str | None) -> str:
    """The sentence in the path's own coordinate (a task-arithmetic or TIES merge's λ, a SLERP's
    t), as its figure's axis is titled: "at λ = 0.40", not "at α = 0.40"."""
    if not path_type:
        return text
    try:
        from basin.paths import path_class

        coord = path_class(path_type).axis_titles.get("alpha", "α")
    except Exception:  # an unknown (old) path type keeps α
        return text
    return text.replace("α =", f"{coord} =") if coord and coord != "α" else text


def chosen_note(entry: Any, metric: str) -> str:
    """An adaptive run's barrier says which metric placed its points (``points_chosen_by``): another
    metric's peak between them can be missed. ``""`` for a run that measured every point."""
    chosen = entry.get("points_chosen_by") if isinstance(entry, dict) else None
    if not isinstance(chosen, str) or not chosen:
        return ""
    if chosen == metric:
        return f" (adaptive points, placed where {metric} changes most)"
    return f" (adaptive points placed for {chosen}, not {metric}: a peak of {metric} between them can be missed)"


def barriers(results: Sequence[dict[str, Any]], metrics: Sequence[str], lo: float, hi: float) -> dict:
    """``{metric: barrier}`` for every metric in ``metrics`` that the registry knows.

    Its direction is the registry's: excess over the chord when lower is better (loss,
    perplexity), drop below it when higher is better (accuracy, F1). ``results`` are
    points ``{coords: {alpha}, metrics}``; a metric without both endpoints is left out.
    """
    out: dict[str, Any] = {}
    for m in metrics:
        entry = METRICS.get(m)
        if entry is None or not entry.barrier:
            continue
        curve = [(r["coords"]["alpha"], r["metrics"][m]) for r in results if m in r.get("metrics", {})]
        b = barrier(curve, lo=lo, hi=hi, higher_is_worse=not entry.higher_is_better)
        if b is not None:
            out[m] = b
    return out
