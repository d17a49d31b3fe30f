"""The trend of a generation attribute along a 1D path: "sentiment rises from … to …, monotone or not".

A generation run measures an attribute (sentiment) of samples of the same P prompts at every α
of its path. The prompt is the unit: its samples at one α are not independent of each other,
but prompts are, and each prompt is measured at every α (paired). From the per-prompt means
``S[p, k]`` (prompt p, k-th α in order):

- **start / end**: the means at the first and last α, and the change end − start with a paired
  t interval over the prompts (d_p = S[p, K] − S[p, 1]);
- **direction**: the least-squares slope in α is a mean over prompts of per-prompt slopes
  b_p = Σ_k (α_k − ᾱ)·S[p, k] / Σ_k (α_k − ᾱ)², so its interval is a one-sample t interval
  over the b_p: "rises" when it lies above 0 at the 95 % level, "falls" when below, else "no
  clear trend";
- **monotone**: every step between neighbouring α gets a paired t interval at the Bonferroni
  level 1 − 0.05/(K − 1); a step against the trend whose whole interval lies against it is a
  significant reversal ("not monotone: falls between α = … and …"), else "no step against the
  trend is significant". That is not proof of monotonicity — only that the data show no
  reversal — and the words say so.

Error rates (``tests/core/test_trend.py`` measures them by Monte Carlo on skewed per-prompt
scores in [0, 1], P = 16 and 64, K = 11): a flat attribute is called "rises" in ≤ 2.5 % of runs
(two-sided 5 %), a strictly rising one "not monotone" in ≤ 2.5 %. With fewer than
:data:`MIN_PROMPTS` prompts no direction is claimed. Pure Python + numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

#: Fewer prompts than this: the numbers are reported, no direction or monotonicity is claimed.
MIN_PROMPTS = 5
LEVEL = 0.95


def t_quantile(q: float, df: float) -> float:
    """Student t quantile (Cornish–Fisher expansion in 1/df; error < 1e-3 for df ≥ 4 and q ≤ 0.9999)."""
    z = NormalDist().inv_cdf(q)
    v = float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
    )


def _t_interval(x: np.ndarray, level: float) -> tuple[float, float, float]:
    """(mean, lo, hi) of a two-sided t interval of the mean of the rows' values (axis 0)."""
    n = x.shape[0]
    m = x.mean(0)
    se = x.std(0, ddof=1) / math.sqrt(n)
    h = t_quantile(1 - (1 - level) / 2, n - 1) * se
    return m, m - h, m + h


def trend(
    alphas: Sequence[float], per_prompt: Sequence[Sequence[float]], *, level: float = LEVEL
) -> dict[str, Any]:
    """The trend of one attribute: ``alphas`` (K increasing) and ``per_prompt[k]`` (P values, prompt order).

    Returns ``{start, end, alpha_start, alpha_end, change, change_ci, slope, slope_ci, direction
    ("rises" | "falls" | "no clear trend" | "too few prompts"), monotone (True: no significant step
    against the trend; False: one or more; None: no direction), reversals: [[α_k, α_k+1], ...],
    prompts, points, method}``.
    """
    order = np.argsort(np.asarray(alphas, dtype=np.float64))
    a = np.asarray(alphas, dtype=np.float64)[order]
    S = np.asarray(per_prompt, dtype=np.float64)[order].T  # (P, K)
    P, K = S.shape
    out: dict[str, Any] = {
        "start": float(S[:, 0].mean()),
        "end": float(S[:, -1].mean()),
        "alpha_start": float(a[0]),
        "alpha_end": float(a[-1]),
        "prompts": int(P),
        "points": int(K),
        "method": f"paired t over {P} prompts; steps at the Bonferroni level 1 − {1 - level:g}/(K − 1)",
    }
    if P < MIN_PROMPTS or K < 2:
        out.update(
            direction="too few prompts" if P < MIN_PROMPTS else "one point",
            monotone=None,
            reversals=[],
        )
        return out
    ch, lo, hi = _t_interval(S[:, -1] - S[:, 0], level)
    out["change"], out["change_ci"] = float(ch), [float(lo), float(hi)]
    w = (a - a.mean()) / float(((a - a.mean()) ** 2).sum())
    sl, slo, shi = _t_interval(S @ w, level)
    out["slope"], out["slope_ci"] = float(sl), [float(slo), float(shi)]
    direction = "rises" if slo > 0 else "falls" if shi < 0 else "no clear trend"
    out["direction"] = direction
    if direction == "no clear trend" or K < 3:
        out["monotone"], out["reversals"] = None, []
        return out
    steps = np.diff(S, axis=1)  # (P, K-1)
    _, slo_k, shi_k = _t_interval(steps, 1 - (1 - level) / (K - 1))
    against = shi_k < 0 if direction == "rises" else slo_k > 0
    out["reversals"] = [[float(a[k]), float(a[k + 1])] for k in np.flatnonzero(against)]
    out["monotone"] = not out["reversals"]
    return out


def trend_sentence(metric: str, t: dict[str, Any]) -> str:
    """``sentiment rises from 0.13 (α = 0) to 0.88 (α = 1): change +0.75 [0.62, 0.88] (95 %, 6 prompts);
    monotone as far as 11 points show (no step down is significant)``."""

    def f(v: float) -> str:
        return f"{v + 0.0:.3g}"

    head = (
        f"{metric} from {f(t['start'])} (α = {f(t['alpha_start'])}) to {f(t['end'])} "
        f"(α = {f(t['alpha_end'])})"
    )
    d = t.get("direction")
    if "change_ci" not in t:
        return f"{head}: {t['prompts']} prompts, too few to say whether it rises"
    lo, hi = t["change_ci"]
    body = f"change {t['change']:+.3g} [{f(lo)}, {f(hi)}] (95 %, {t['prompts']} prompts)"
    if d == "no clear trend":
        return f"{head}: no clear trend — {body}"
    words = f"{metric} {d} from {f(t['start'])} (α = {f(t['alpha_start'])}) to {f(t['end'])} (α = {f(t['alpha_end'])})"
    if t.get("monotone") is True:
        against = "down" if d == "rises" else "up"
        mono = f"monotone as far as {t['points']} points show (no step {against} is significant)"
    elif t.get("monotone") is False:
        steps = ", ".join(f"α {f(x)}→{f(y)}" for x, y in t["reversals"])
        mono = f"not monotone: it turns back significantly at {steps}"
    else:
        mono = ""
    return f"{words}: {body}" + (f"; {mono}" if mono else "")


__all__ = ["LEVEL", "MIN_PROMPTS", "t_quantile", "trend", "trend_sentence"]
