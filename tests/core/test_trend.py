"""The sentiment trend's words ("rises", "monotone") have the error rates docs/engine.md states.

Monte Carlo on synthetic per-prompt scores in [0, 1] (Beta draws around a per-prompt level, as a
sentiment classifier's scores are: skewed and bounded), K = 11 points, P = 16 and 64 prompts.
"""

from __future__ import annotations

import numpy as np
import pytest

from basin.analysis.trend import t_quantile, trend, trend_sentence

K = 11
ALPHAS = np.linspace(0.0, 1.0, K)
REPS = 600
# a rate measured from REPS runs may exceed its true value by this much (3 binomial standard errors at 5 %)
SLACK = 3 * (0.05 * 0.95 / REPS) ** 0.5


def draws(rng: np.random.Generator, P: int, rise: float) -> np.ndarray:
    """(K, P) per-prompt means of 3 samples: prompt level + rise·α, Beta noise, all in [0, 1]."""
    level = 0.6 * rng.beta(0.5, 2.0, size=(P, 1)) + rise * ALPHAS[None, :]
    mu = np.clip(level, 0.0, 1.0)
    s = rng.beta(mu[..., None] * 4 + 0.05, (1 - mu[..., None]) * 4 + 0.05, size=(P, K, 3)).mean(-1)
    return s.T


@pytest.mark.parametrize("P", [16, 64])
def test_trend_words_have_their_stated_error_rates(P):
    rng = np.random.default_rng(P)
    flat = [trend(ALPHAS, draws(rng, P, 0.0)) for _ in range(REPS)]
    rising = [trend(ALPHAS, draws(rng, P, 0.3)) for _ in range(REPS)]
    false_rise = np.mean([t["direction"] == "rises" for t in flat])
    false_reversal = np.mean([t["monotone"] is False for t in rising])
    assert false_rise <= 0.025 + SLACK, false_rise  # a flat attribute called "rises"
    assert false_reversal <= 0.025 + SLACK, false_reversal  # a rising one called "not monotone"
    # the change's 95 % interval covers the true change (0 when flat, 0.3 when rising)
    cover = np.mean([t["change_ci"][0] <= 0.0 <= t["change_ci"][1] for t in flat])
    assert cover >= 0.95 - SLACK, cover
    # and it has power: a rise of 0.3 over the path is seen
    assert np.mean([t["direction"] == "rises" for t in rising]) >= 0.9


def test_a_real_reversal_is_reported_with_where_it_is():
    rng = np.random.default_rng(3)
    S = draws(rng, 64, 0.0)
    S += 0.6 * ALPHAS[:, None]
    S[6:] -= 0.4  # a drop between α = 0.5 and 0.6
    t = trend(ALPHAS, S)
    assert t["direction"] == "rises" and t["monotone"] is False
    assert t["reversals"] == [[pytest.approx(0.5), pytest.approx(0.6)]]
    assert "not monotone: it turns back significantly at α 0.5→0.6" in trend_sentence(
        "sentiment", t
    )


def test_too_few_prompts_claim_nothing_and_t_quantiles_are_right():
    t = trend([0.0, 1.0], [[0.1, 0.2, 0.1], [0.9, 0.8, 0.9]])
    assert t["direction"] == "too few prompts" and "too few to say" in trend_sentence(
        "sentiment", t
    )
    # Student t quantiles (tables): df 4, 10, 30 at 0.975; df 15 at 0.9975
    for q, df, want in (
        (0.975, 4, 2.776),
        (0.975, 10, 2.228),
        (0.975, 30, 2.042),
        (0.9975, 15, 3.286),
    ):
        assert t_quantile(q, df) == pytest.approx(want, abs=2e-3)
