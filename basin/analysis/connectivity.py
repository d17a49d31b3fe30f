"""The barrier's 95 % interval and the connectivity verdict: a studentized simultaneous band.

Why not a bootstrap of the maximum: the barrier is max over α of the excess over the
chord, and the percentile bootstrap of a maximum of many noisy points is biased upward
exactly where the true barrier is 0. On synthetic flat paths it called them "not
connected" in 35–48 % of evaluation sets at 26 points, whatever n (``docs/verdict.md``
has the measurements).

The method (per metric, the K evaluated points with α in [α₀, α₁], sorted, chord
between the first and the last, s = (α − α₀)/(α₁ − α₀)):

1. At each interior point j the excess over the chord is a smooth function of means over
   the examples: E_j = ±(g(R_j) − (1−s_j)·g(R_0) − s_j·g(R_K)), R_k = Σᵢ numᵢₖ / Σᵢ denᵢ (a
   mean when den ≡ 1: classification loss, accuracy; the token-mean NLL of language models
   with den = tokens per text), g the identity (or exp for perplexity), the sign + for a
   metric where lower is better. Its standard error se_j comes from the per-example
   influence values (the delta method, exact for the identity g): the examples are the unit.
2. Paired bootstrap over examples (the same resampled examples at every α, B draws): in each
   draw, every interior point's studentized deviation t*_j = (E*_j − E_j) / se*_j, with
   se*_j recomputed on the draw, and M* = max_j |t*_j| (the *max-t* statistic).
3. c = the 95th percentile of M*; the band E_j ± c·se_j holds every interior point's
   population excess at once with ≈ 95 % probability.
4. The barrier (the largest population excess over the evaluated grid, and 0 at the
   endpoints) therefore lies in [max(0, max_j (E_j − c·se_j)), max(0, max_j (E_j + c·se_j))].

The verdict (:func:`verdict`) compares that interval with 0 and with a tolerance ε
(:func:`tolerance`: 0.02 nats of loss, 2 accuracy points, 2 % of the endpoints' perplexity):

- ``connected`` — the whole interval is ≤ ε: at the 95 % level the barrier is below ε;
- ``not connected`` — the interval's lower end is above 0 and its upper end above ε;
- ``inconclusive`` — the interval reaches both 0 and beyond ε: the data cannot decide.
  The band's width scales as 1/√n, so :func:`examples_to_decide` gives roughly how many
  examples would make it decide if the estimate stayed where it is.

numpy only (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

LEVEL = 0.95
#: ``ci_method`` of a barrier entry computed here (entries with another method get no verdict).
METHOD = "max-t band"
#: Bootstrap draws of the band's critical value.
DRAWS = 1000
#: What "connected" tolerates, in the metric's units (accuracy: a fraction, 0.02 = 2 points).
TOLERANCE = {"loss": 0.02, "accuracy": 0.02}
#: For perplexity: this fraction of the larger endpoint's value (≈ 0.02 nats of loss).
RELATIVE_TOLERANCE = 0.02
#: At most this many values per bootstrap chunk (draws × examples).
_CHUNK = 4_000_000

Verdict = Literal["connected", "not connected", "inconclusive"]


@dataclass(frozen=True)
class Band:
    """A barrier's simultaneous band: the estimate, its 95 % interval and the band itself."""

    value: float  #: the barrier estimate max(0, max_j E_j)
    lo: float  #: the interval's lower end, max(0, max_j (E_j − c·se_j))
    hi: float  #: its upper end, max(0, max_j (E_j + c·se_j))
    raw_lo: float  #: max_j (E_j − c·se_j) unclipped (for :func:`examples_to_decide`)
    critical: float  #: c
    n: int  #: examples


def _draw_counts(rng: np.random.Generator, draws: int, n: int) -> np.ndarray:
    """(draws, n) resampling counts: how often each example is drawn (n draws with replacement)."""
    idx = rng.integers(0, n, size=(draws, n))
    flat = (np.arange(draws)[:, None] * n + idx).ravel()
    return np.bincount(flat, minlength=draws * n).reshape(draws, n).astype(np.float64)


def band_arrays(
    num: np.ndarray,
    s: np.ndarray,
    *,
    den: np.ndarray | None = None,
    higher_is_better: bool = False,
    exp: bool = False,
    rng: np.random.Generator,
    draws: int = DRAWS,
    level: float = LEVEL,
) -> dict[str, np.ndarray]:
    """The band for one or many paths at once (vectorised for Monte-Carlo checks).

    ``num``: (..., K, n) per-example numerators at the K points (sorted by α, chord from the
    first to the last); ``s``: (K,) positions on the chord (0 … 1); ``den``: (..., n) the
    per-example denominators (token counts, the same at every α) or None (means);
    ``exp``: the metric is exp of the ratio (perplexity). Returns arrays over the leading
    dimensions: ``value``, ``lo``, ``hi``, ``raw_lo``, ``critical``.
    """
    num = np.asarray(num, np.float64)
    lead, (K, n) = num.shape[:-2], num.shape[-2:]
    s = np.asarray(s, np.float64)
    if den is None:
        den_a = np.ones((*lead, n))
    else:
        den_a = np.broadcast_to(np.asarray(den, np.float64), (*lead, n))
    sign = -1.0 if higher_is_better else 1.0
    inner = np.arange(1, K - 1)
    J = inner.size
    dsum = den_a.sum(-1)  # (...)
    R = num.sum(-1) / dsum[..., None]  # (..., K)
    g = np.exp(np.minimum(R, 700.0)) if exp else R
    gp = g if exp else np.ones_like(R)  # g'(R) at the estimate
    # W: (..., J, K) — E_j = sign·(g_j − (1−s_j) g_0 − s_j g_K), linearised with g'(R̂)
    W = np.zeros((*lead, J, K))
    W[..., np.arange(J), inner] = sign * gp[..., inner]
    W[..., :, 0] -= sign * (1 - s[inner]) * gp[..., :1]
    W[..., :, K - 1] -= sign * s[inner] * gp[..., K - 1 :]

    def excess(gv: np.ndarray) -> np.ndarray:  # (..., K) → (..., J)
        return sign * (gv[..., inner] - (1 - s[inner]) * gv[..., :1] - s[inner] * gv[..., K - 1 :])

    E = excess(g)
    x = W @ num  # (..., J, n): per-example linearised excess (numerator units)
    y = (W @ R[..., None])[..., 0]  # (..., J)
    dbar = dsum / n
    resid = x - y[..., None] * den_a[..., None, :]
    se = np.sqrt((resid * resid).sum(-1) / (n * (n - 1))) / dbar[..., None]  # (..., J)

    x2, d2 = x * x, den_a * den_a
    xd = None if den is None else x * den_a[..., None, :]
    stats: list[np.ndarray] = []
    step = max(1, min(draws, _CHUNK // max(1, n)))
    for start in range(0, draws, step):
        c = min(step, draws - start)
        C = _draw_counts(rng, c, n)  # (c, n)
        Sd = den_a @ C.T  # (..., c)
        Rs = (num @ C.T) / Sd[..., None, :]  # (..., K, c)
        gs = np.exp(np.minimum(Rs, 700.0)) if exp else Rs
        Es = excess(np.moveaxis(gs, -1, -2))  # (..., c, J)
        ys = np.moveaxis(W @ Rs, -1, -2)  # (..., c, J)
        A = np.moveaxis(x2 @ C.T, -1, -2)  # Σ cᵢ xᵢⱼ²
        # Σ cᵢ xᵢⱼ dᵢ; with dᵢ ≡ 1 it is Σ_k W_jk Σ cᵢ numᵢₖ = y*_j · Σ cᵢ (no product needed)
        Bm = ys * Sd[..., :, None] if xd is None else np.moveaxis(xd @ C.T, -1, -2)
        D = (d2 @ C.T)[..., None]  # (..., c, 1)
        var = np.maximum(A - 2 * ys * Bm + ys * ys * D, 0.0) / (n * (n - 1))
        ses = np.sqrt(var) / (Sd[..., None] / n)
        # a draw whose examples all agree has se* = 0: floor it at a tenth of the estimate's
        ses = np.maximum(ses, 0.1 * se[..., None, :])
        dev = np.abs(Es - E[..., None, :])
        t = np.divide(dev, ses, out=np.zeros_like(dev), where=ses > 0)
        stats.append(t.max(-1) if J else np.zeros(t.shape[:-1]))
    M = np.concatenate(stats, axis=-1)
    crit = np.quantile(M, level, axis=-1, method="higher")
    if J:
        raw_lo = (E - crit[..., None] * se).max(-1)
        raw_hi = (E + crit[..., None] * se).max(-1)
        value = np.maximum(E.max(-1), 0.0)
    else:
        raw_lo = raw_hi = value = np.zeros(lead)
    return {
        "value": value,
        "lo": np.maximum(raw_lo, 0.0),
        "hi": np.maximum(raw_hi, 0.0),
        "raw_lo": raw_lo,
        "critical": crit,
    }


def barrier_band(
    num: np.ndarray,
    s: Sequence[float] | np.ndarray,
    *,
    den: np.ndarray | None = None,
    higher_is_better: bool = False,
    exp: bool = False,
    seed: int = 0,
    draws: int = DRAWS,
) -> Band:
    """The band of one path: ``num`` (K, n), ``s`` (K,), ``den`` (n,) or None. Seeded."""
    rng = np.random.default_rng([int(seed), 0xBA2217E5])
    out = band_arrays(
        np.asarray(num, np.float64),
        np.asarray(s, np.float64),
        den=den,
        higher_is_better=higher_is_better,
        exp=exp,
        rng=rng,
        draws=draws,
    )
    return Band(
        value=float(out["value"]),
        lo=float(out["lo"]),
        hi=float(out["hi"]),
        raw_lo=float(out["raw_lo"]),
        critical=float(out["critical"]),
        n=int(np.shape(num)[-1]),
    )


def tolerance(metric: str, endpoints: Sequence[float] = ()) -> float | None:
    """ε of "connected" for ``metric`` (its units); ``None`` for a metric without one."""
    if metric in TOLERANCE:
        return TOLERANCE[metric]
    if metric == "perplexity" and endpoints:
        return RELATIVE_TOLERANCE * max(abs(float(v)) for v in endpoints)
    return None


def verdict(lo: float, hi: float, tol: float) -> Verdict:
    """``connected`` (hi ≤ ε), ``not connected`` (lo > 0 and hi > ε), else ``inconclusive``."""
    if hi <= tol:
        return "connected"
    if lo > 0:
        return "not connected"
    return "inconclusive"


def examples_to_decide(value: float, lo: float, hi: float, n: int, tol: float) -> int | None:
    """Roughly how many examples would make an inconclusive interval decide, if the estimate
    stayed at ``value`` and the band's half-widths shrank as 1/√n (``lo`` unclipped). The
    smaller of the counts that would put the upper end below ε or the lower end above 0;
    ``None`` when neither moves (e.g. the estimate sits exactly at ε)."""
    best: float | None = None
    up, down = hi - value, value - lo
    if value < tol and up > 0:
        best = n * (up / (tol - value)) ** 2
    if value > 0 and down > 0:
        alt = n * (down / value) ** 2
        best = alt if best is None else min(best, alt)
    if best is None or not math.isfinite(best):
        return None
    return max(n + 1, int(float(f"{math.ceil(best):.2g}")))


__all__ = [
    "DRAWS",
    "LEVEL",
    "METHOD",
    "Band",
    "band_arrays",
    "barrier_band",
    "examples_to_decide",
    "tolerance",
    "verdict",
]
