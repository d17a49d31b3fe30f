"""Sampling uncertainty of a point's metrics and of a path's barrier, from per-example values.

Every metric Basin reports is an average over the evaluation examples, so a point's
value has a sampling error: with another 512 examples from the same distribution it
would differ. Two tools, both over the *examples* (the models are fixed):

- :func:`point_intervals` — a 95 % interval per point (cheap, closed form):

  - generation ``sentiment`` and ``length``: mean ± 1.96·s/√n over the *prompts'* means (n
    prompts: samples of one prompt are not independent); ``sample_perplexity``: exp of the
    ratio interval below over the prompts' summed NLLs and token counts;

  - classification ``loss``: mean ± 1.96·s/√n, s the sample standard deviation of the
    per-example cross-entropies (normal approximation; n is ``max_examples``-sized);
  - classification ``accuracy``: the **Wilson score** interval for a proportion (stays
    inside [0, 1] and is not degenerate at 0 % or 100 % accuracy, unlike p ± 1.96·√(p(1−p)/n));
  - token-mean ``loss`` of causal LM and seq2seq: a **ratio estimator** R = Σ NLLᵢ / Σ Tᵢ over
    texts (NLLᵢ summed over text i's Tᵢ predicted tokens), with the **delta-method** standard
    error SE = √(Σ dᵢ² / (n(n−1))) / T̄, dᵢ = NLLᵢ − R·Tᵢ (tokens of one text are not
    independent, so the text is the unit that is resampled, not the token);
    ``perplexity``: exp of the loss interval's ends (exp is monotone).

- :func:`barrier_verdicts` — the barrier's 95 % interval and the connectivity verdict from a
  **studentized simultaneous band** over α on the excess over the chord, bootstrapped paired
  over examples (the same resampled examples at every α; max-t over the grid):
  :mod:`basin.analysis.connectivity` has the method, ``docs/verdict.md`` its measured
  coverage, false-verdict rate and power. (A percentile bootstrap of the *maximum*, used
  before, is biased upward where the true barrier is 0: it called flat paths "not
  connected" 35–48 % of the time at 26 points.)

The bootstrap needs every point's per-example values. A run with ``per_example`` keeps
them in its records (``examples``); every other 1D run keeps only what the barrier needs,
compactly (:func:`pack_bootstrap` → the record's ``bootstrap``: per-example loss and
correctness — NLL and token counts for language models — as base64 float32 / bits /
uint32, n ≤ ``max_examples``; about 4.1 bytes × 4/3 per example per point for
classification), so every 1D run with a loss or accuracy metric gets its barrier interval.

numpy only (no torch): the figures and the report import this package.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from basin.metrics import METRICS

Z95 = 1.959963984540054
#: Bootstrap draws of a barrier's interval (the spec's seed seeds them).
BARRIER_DRAWS = 1000  # = basin.analysis.connectivity.DRAWS


def mean_interval(values: Sequence[float] | np.ndarray) -> list[float] | None:
    """mean ± 1.96·s/√n (s with n−1); ``None`` for fewer than 2 finite values."""
    x = np.asarray(values, dtype=np.float64)
    if x.size < 2 or not np.all(np.isfinite(x)):
        return None
    m = float(x.mean())
    se = float(x.std(ddof=1)) / math.sqrt(x.size)
    return [m - Z95 * se, m + Z95 * se]


def wilson_interval(successes: float, n: int) -> list[float] | None:
    """The Wilson score 95 % interval of a proportion ``successes / n``; ``None`` when n = 0."""
    if n <= 0:
        return None
    p = successes / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def ratio_interval(nll: Sequence[float] | np.ndarray, tokens: Sequence[float] | np.ndarray) -> list[float] | None:
    """Σ nll / Σ tokens ± 1.96·SE, SE by the delta method over texts; ``None`` if undefined."""
    y = np.asarray(nll, dtype=np.float64)
    t = np.asarray(tokens, dtype=np.float64)
    n = y.size
    if n < 2 or t.sum() <= 0 or not np.all(np.isfinite(y)):
        return None
    r = float(y.sum() / t.sum())
    d = y - r * t
    se = math.sqrt(float((d * d).sum()) / (n * (n - 1))) / float(t.mean())
    return [r - Z95 * se, r + Z95 * se]


def _exp(v: float) -> float:
    return math.exp(min(v, 700.0))


def point_intervals(examples: Mapping[str, Any], metrics: Sequence[str]) -> dict[str, list[float]]:
    """``{metric: [lo, hi]}`` for the metrics of ``metrics`` that per-example values determine.

    ``examples`` is an evaluator's per-example record: classification ``{loss, correct,
    confidence}``; causal LM / seq2seq ``{nll, tokens}``; generation, per *prompt* (a
    prompt's samples share it, so the prompt is the unit resampled) ``{sentiment, length}``
    means over its samples and ``{sample_nll, sample_tokens}`` sums over them. F1 (macro, not
    a mean over examples) and distinct-n (a ratio of distinct n-grams) get none.
    """
    out: dict[str, list[float] | None] = {}
    for m in ("sentiment", "length"):
        if m in examples:
            out[m] = mean_interval(examples[m])
    if "sample_nll" in examples:
        ci = ratio_interval(examples["sample_nll"], examples["sample_tokens"])
        out["sample_perplexity"] = [_exp(ci[0]), _exp(ci[1])] if ci is not None else None
    if "nll" in examples:
        ci = ratio_interval(examples["nll"], examples["tokens"])
        out["loss"] = ci
        out["perplexity"] = [_exp(ci[0]), _exp(ci[1])] if ci is not None else None
    else:
        if "loss" in examples:
            out["loss"] = mean_interval(examples["loss"])
        if "correct" in examples:
            c = np.asarray(examples["correct"], dtype=np.float64)
            out["accuracy"] = wilson_interval(float(c.sum()), int(c.size))
    return {m: [float(v[0]), float(v[1])] for m in metrics if (v := out.get(m)) is not None}


# ---- the barrier's paired bootstrap --------------------------------------------------------


def _columns(examples: Mapping[str, Any], metric: str) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(numerator values, denominator values or None) whose resampled ratio/mean is ``metric``."""
    if "nll" in examples and metric in ("loss", "perplexity"):
        return np.asarray(examples["nll"], np.float64), np.asarray(examples["tokens"], np.float64)
    if metric == "loss" and "loss" in examples:
        return np.asarray(examples["loss"], np.float64), None
    if metric == "accuracy" and "correct" in examples:
        return np.asarray(examples["correct"], np.float64), None
    return None


#: The columns :func:`pack_bootstrap` keeps and how: numpy dtype, or ``bits`` (booleans).
_PACKED = {"loss": "<f4", "correct": "bits", "nll": "<f4", "tokens": "<u4"}


def pack_bootstrap(examples: Mapping[str, Any] | None, metrics: Sequence[str]) -> dict[str, Any] | None:
    """The per-example columns the barrier intervals of ``metrics`` need, compact and
    JSON-ready: ``{"n": n, column: base64}`` (loss, correct for classification; nll, tokens
    for language models). ``None`` when none of ``metrics`` has a barrier interval."""
    if not isinstance(examples, Mapping):
        return None
    want: set[str] = set()
    for m in metrics:
        if "nll" in examples and m in ("loss", "perplexity"):
            want |= {"nll", "tokens"}
        elif m == "loss" and "loss" in examples:
            want.add("loss")
        elif m == "accuracy" and "correct" in examples:
            want.add("correct")
    if not want:
        return None
    out: dict[str, Any] = {}
    for col in sorted(want):
        kind = _PACKED[col]
        values = np.asarray(examples[col])
        out["n"] = int(values.size)
        raw = np.packbits(values.astype(bool)) if kind == "bits" else values.astype(kind)
        out[col] = base64.b64encode(raw.tobytes()).decode("ascii")
    return out


def unpack_bootstrap(packed: Any) -> dict[str, np.ndarray] | None:
    """The columns of :func:`pack_bootstrap`'s output as arrays (``None`` when malformed)."""
    if not isinstance(packed, Mapping) or not isinstance(packed.get("n"), int):
        return None
    n = packed["n"]
    out: dict[str, np.ndarray] = {}
    try:
        for col, kind in _PACKED.items():
            if col not in packed:
                continue
            raw = base64.b64decode(packed[col], validate=True)
            if kind == "bits":
                arr = np.unpackbits(np.frombuffer(raw, np.uint8))[:n].astype(np.float64)
            else:
                arr = np.frombuffer(raw, kind).astype(np.float64)
            if arr.size != n:
                return None
            out[col] = arr
    except (ValueError, TypeError):
        return None
    return out or None


def _barrier_rows(records: Sequence[Mapping[str, Any]], metric: str, a0: float, a1: float
                  ) -> tuple[list[float], np.ndarray, np.ndarray | None] | None:
    """(α's, per-example numerators (points, n), denominators or None) of the points in [a0, a1]."""
    tol = 1e-9 * max(1.0, abs(a1 - a0))
    rows: dict[float, tuple[np.ndarray, np.ndarray | None]] = {}
    for r in records:
        a = float(r["coords"]["alpha"])
        if a < a0 - tol or a > a1 + tol or a in rows:
            continue
        ex = r.get("examples")
        if not isinstance(ex, Mapping):
            ex = unpack_bootstrap(r.get("bootstrap"))
        cols = _columns(ex, metric) if isinstance(ex, Mapping) else None
        if cols is None:
            return None
        rows[a] = cols
    alphas = sorted(rows)
    if len(alphas) < 2 or abs(alphas[0] - a0) > tol or abs(alphas[-1] - a1) > tol:
        return None
    n = rows[alphas[0]][0].size
    if n < 2 or any(rows[a][0].size != n for a in alphas):
        return None
    return alphas, np.stack([rows[a][0] for a in alphas]), rows[alphas[0]][1]


def barrier_verdicts(
    records: Sequence[Mapping[str, Any]],
    barriers: Mapping[str, Mapping[str, Any]],
    *,
    seed: int = 0,
    draws: int = BARRIER_DRAWS,
) -> dict[str, dict[str, Any]]:
    """``{metric: fields}``: each barrier's 95 % interval and connectivity verdict, the fields
    the summary's barrier entry carries (:mod:`basin.analysis.connectivity`):

    ``ci`` [lo, hi] (the studentized simultaneous band's interval of the barrier),
    ``ci_method`` (``"max-t band"``), ``ci_level``, ``ci_draws``, ``ci_examples`` (n),
    ``tolerance`` (ε of "connected", the metric's units), ``verdict`` (``connected`` /
    ``not connected`` / ``inconclusive``) and, when inconclusive, ``examples_to_decide``.

    ``records`` are 1D point records ``{coords: {alpha}, examples}`` (or ``bootstrap``, the
    compact columns of :func:`pack_bootstrap`); ``barriers`` the point estimates
    (:func:`basin.analysis.barrier.barriers`), whose ``start`` / ``end`` fix the chord. Only
    the points with α in [start, end] count, as for the estimate. A metric is left out when
    a point in that range lacks per-example values (the run did not keep them) or they
    disagree in length. Seeded: the same records give the same interval.
    """
    from basin.analysis import connectivity as cx

    out: dict[str, dict[str, Any]] = {}
    for metric, b in barriers.items():
        a0, a1 = float(b["start"]), float(b["end"])
        got = _barrier_rows(records, metric, a0, a1)
        if got is None:
            continue
        alphas, values, denom = got
        s = (np.asarray(alphas) - a0) / (a1 - a0)
        band = cx.barrier_band(values, s, den=denom, higher_is_better=METRICS[metric].higher_is_better,
                               exp=metric == "perplexity", seed=seed, draws=draws)
        ends = [float(values[k].sum() / (denom.sum() if denom is not None else values.shape[1]))
                for k in (0, -1)]
        tol = cx.tolerance(metric, [math.exp(min(v, 700.0)) for v in ends] if metric == "perplexity" else ends)
        entry: dict[str, Any] = {"ci": [band.lo, band.hi], "ci_method": cx.METHOD, "ci_level": cx.LEVEL,
                                 "ci_draws": draws, "ci_examples": band.n}
        if tol is not None:
            said = cx.verdict(band.lo, band.hi, tol)
            entry.update(tolerance=tol, verdict=said)
            if said == "inconclusive":
                entry["examples_to_decide"] = cx.examples_to_decide(band.value, band.raw_lo, band.hi,
                                                                    band.n, tol)
        out[metric] = entry
    return out


def barrier_intervals(
    records: Sequence[Mapping[str, Any]],
    barriers: Mapping[str, Mapping[str, Any]],
    *,
    seed: int = 0,
    draws: int = BARRIER_DRAWS,
) -> dict[str, list[float]]:
    """``{metric: [lo, hi]}``: the 95 % interval of each barrier (:func:`barrier_verdicts`)."""
    return {m: v["ci"] for m, v in barrier_verdicts(records, barriers, seed=seed, draws=draws).items()}


#: Path types whose barrier says whether the endpoints are connected along a fitted curve.
CURVE_PATHS = frozenset({"bezier", "polychain"})


def connected_words(path_type: str | None = "linear") -> str:
    """How to say "connected" for a path of this type: ``linearly connected`` (``linear``, or
    unknown: the default of every 1D path before curves existed), ``connected along this
    curve`` (Bezier, polychain), ``connected along this path`` (any other 1D path)."""
    if path_type in (None, "", "linear"):
        return "linearly connected"
    return "connected along this curve" if path_type in CURVE_PATHS else "connected along this path"


def connectivity_verdict(entry: Mapping[str, Any], path_type: str | None = "linear", *,
                         metric: str = "loss") -> str | None:
    """The verdict of a barrier entry in words (what "connected" means included), or ``None``
    when the entry has no calibrated verdict (no interval, or one from an older method).

    ``linearly connected: the barrier is below 0.02 nats at the 95 % level``; ``not linearly
    connected: the barrier is above 0 at the 95 % level``; ``inconclusive whether linearly connected: the barrier may be
    0 or above 0.02 nats (95 %); about 2,100 examples would decide it (now 256)``. Linearly
    only for a straight line; "connected along this curve" for a Bezier or polychain path
    (:func:`connected_words`).
    """
    from basin.metrics import fmt_number

    said = entry.get("verdict")
    tol = entry.get("tolerance")
    ci = entry.get("ci")
    if (entry.get("ci_method") != "max-t band" or said not in ("connected", "not connected", "inconclusive")
            or not isinstance(tol, (int, float)) or not isinstance(ci, (list, tuple)) or len(ci) != 2):
        return None
    m = METRICS.get(metric)
    scale = m.scale if m is not None else 1.0
    unit = f" {m.delta_unit}" if m is not None and m.delta_unit else ""
    eps = f"{fmt_number(float(tol) * scale)}{unit}"
    words = connected_words(path_type)
    level = f"{round(100 * float(entry.get('ci_level') or 0.95))} %"
    if said == "connected":
        if float(ci[0]) > 0:
            return (f"{words} within {eps}: a small barrier, above 0 but below {eps} at the {level} level")
        return f"{words}: the barrier is below {eps} at the {level} level"
    if said == "not connected":
        return f"not {words}: the barrier is above 0 at the {level} level"
    more = entry.get("examples_to_decide")
    n = entry.get("ci_examples")
    tail = ""
    if isinstance(more, int):
        tail = f"; about {more:,} examples would decide it" + (f" (now {n:,})" if isinstance(n, int) else "")
    return f"inconclusive whether {words}: the barrier may be 0 or above {eps} ({level}){tail}"


__all__ = [
    "BARRIER_DRAWS",
    "CURVE_PATHS",
    "barrier_intervals",
    "barrier_verdicts",
    "connected_words",
    "connectivity_verdict",
    "mean_interval",
    "pack_bootstrap",
    "point_intervals",
    "ratio_interval",
    "unpack_bootstrap",
    "wilson_interval",
]
