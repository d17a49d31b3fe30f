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

- :func:`barrier_intervals` — a **paired bootstrap** over examples for the barrier (SCIENCE.md,
  Uncertainty): each of B draws resamples n example indices with replacement, recomputes
  every point's metric on that same resample (paired: the same examples at every α), and
  recomputes the whole curve's barrier with the same chord endpoints; the interval is the
  2.5 / 97.5 percentiles of the B barriers. The barrier is a maximum over α of the excess
  over the chord, and the chord meets the curve at its endpoints, so every draw's barrier
  is ≥ 0: an interval whose lower end is 0 means that in ≥ 2.5 % of the resamples no point
  lay above the chord — *not distinguishable from 0* (:func:`connectivity_verdict`).

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
BARRIER_DRAWS = 1000
#: At most this many resampled counts are held at once (draws × examples): ~100 MB with the
#: indices, whatever the number of examples.
_CHUNK = 4_000_000


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


def _resampled_means(values: np.ndarray, counts: np.ndarray, denom: np.ndarray | None) -> np.ndarray:
    """(draws, points): each draw's metric at each point; values (points, n), counts (draws, n)."""
    num = counts @ values.T
    if denom is None:
        return num / counts.sum(axis=1, keepdims=True)
    return num / (counts @ denom)[:, None]


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


def barrier_intervals(
    records: Sequence[Mapping[str, Any]],
    barriers: Mapping[str, Mapping[str, Any]],
    *,
    seed: int = 0,
    draws: int = BARRIER_DRAWS,
) -> dict[str, list[float]]:
    """``{metric: [lo, hi]}``: the paired bootstrap 95 % interval of each barrier in ``barriers``.

    ``records`` are 1D point records ``{coords: {alpha}, examples}`` (or ``bootstrap``, the
    compact columns of :func:`pack_bootstrap`); ``barriers`` the point
    estimates (:func:`basin.analysis.barrier.barriers`), whose ``start`` / ``end`` fix the
    chord. Only the points with α in [start, end] count, as for the estimate. A metric is
    left out when a point in that range lacks per-example values (the run did not keep
    them) or they disagree in length. Seeded: the same records give the same interval.
    """
    out: dict[str, list[float]] = {}
    for metric, b in barriers.items():
        a0, a1 = float(b["start"]), float(b["end"])
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
                rows = {}
                break
            rows[a] = cols
        alphas = sorted(rows)
        if len(alphas) < 2 or abs(alphas[0] - a0) > tol or abs(alphas[-1] - a1) > tol:
            continue
        n = rows[alphas[0]][0].size
        if n < 2 or any(rows[a][0].size != n for a in alphas):
            continue
        values = np.stack([rows[a][0] for a in alphas])  # (points, n)
        denom = rows[alphas[0]][1]  # token counts: the same texts at every α
        s = (np.asarray(alphas) - a0) / (a1 - a0)
        higher_better = METRICS[metric].higher_is_better
        rng = np.random.default_rng([int(seed), 0xBA2217E5])
        stats = np.empty(draws)
        step = max(1, min(draws, _CHUNK // n))
        for start in range(0, draws, step):
            c = min(step, draws - start)
            idx = rng.integers(0, n, size=(c, n))
            flat = (np.arange(c)[:, None] * n + idx).ravel()
            counts = np.bincount(flat, minlength=c * n).reshape(c, n).astype(np.float64)
            m = _resampled_means(values, counts, denom)  # (c, points)
            if metric == "perplexity":
                m = np.exp(np.minimum(m, 700.0))
            chord = (1 - s)[None, :] * m[:, :1] + s[None, :] * m[:, -1:]
            excess = (chord - m) if higher_better else (m - chord)
            stats[start:start + c] = excess.max(axis=1)
        lo, hi = np.percentile(stats, [2.5, 97.5])
        out[metric] = [float(lo), float(hi)]
    return out


#: Path types whose barrier says whether the endpoints are connected along a fitted curve.
CURVE_PATHS = frozenset({"bezier", "polychain"})


def connected_words(path_type: str | None = "linear") -> str:
    """How to say "connected" for a path of this type: ``linearly connected`` (``linear``, or
    unknown: the default of every 1D path before curves existed), ``connected along this
    curve`` (Bezier, polychain), ``connected along this path`` (any other 1D path)."""
    if path_type in (None, "", "linear"):
        return "linearly connected"
    return "connected along this curve" if path_type in CURVE_PATHS else "connected along this path"


def connectivity_verdict(ci: Sequence[float], path_type: str | None = "linear") -> str:
    """Words for a barrier interval: whether 0 lies in it, i.e. whether the two checkpoints
    are connected at the 95 % level — *linearly* only for a straight line; along a Bezier or
    polychain path the barrier is the curve's (:func:`connected_words`)."""
    lo = float(ci[0])
    words = connected_words(path_type)
    if lo <= 1e-12:
        return f"not distinguishable from 0 ({words} at the 95 % level)"
    return f"above 0 at the 95 % level (not {words})"


__all__ = [
    "BARRIER_DRAWS",
    "CURVE_PATHS",
    "barrier_intervals",
    "connected_words",
    "connectivity_verdict",
    "mean_interval",
    "pack_bootstrap",
    "point_intervals",
    "ratio_interval",
    "unpack_bootstrap",
    "wilson_interval",
]
