"""Monte-Carlo calibration of the barrier interval and the connectivity verdict.

Synthetic per-example losses along a path with a *known* barrier h (the population excess
over the chord is h·4s(1−s), so h < 0 is a path below its chord: true barrier 0), at K
evenly spaced points, n examples. For each (h, K, n) it draws ``reps`` evaluation sets and
reports, for a method:

- ``coverage``: how often the 95 % interval holds the true barrier (the largest
  population excess over the evaluated grid, and 0 at the endpoints);
- ``above0``: how often the interval's lower end is above 0 — the claim "a barrier above 0
  at the 95 % level", i.e. "not connected". For h ≤ 0 that is the false-verdict rate; for
  h > 0 it is the power.

Methods: ``new`` (:mod:`basin.analysis.connectivity`, the studentized simultaneous band)
and ``old`` (the percentile paired bootstrap of the maximum that Basin used before; kept
here only to measure it).

Per-example model: lᵢ(s) = dᵢ + gᵢ·s + Σ_k aᵢₖ·sin(kπs) + εᵢ(s) + h·4s(1−s), with dᵢ a
skewed difficulty (exponential), gᵢ a per-example slope (both cancel in the excess over the
chord, as in real paired data), aᵢ₁ centred-exponential (skewed) and aᵢ₂, aᵢ₃ normal smooth
per-example deviations along the path, and εᵢ(s) small independent noise.

    python -m bench.verdict_calibration [--reps 400] [--draws 1000]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from basin.analysis.connectivity import band_arrays

BARRIERS = (-0.02, 0.0, 0.02, 0.1)
POINTS = (11, 26, 51)
EXAMPLES = (64, 512)


def synthetic(
    rng: np.random.Generator, reps: int, K: int, n: int, h: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """(reps, K, n) per-example losses, s (K,), the true barrier over the grid."""
    s = np.linspace(0.0, 1.0, K)
    d = rng.exponential(0.5, size=(reps, 1, n))
    g = rng.normal(0.0, 0.3, size=(reps, 1, n))
    a1 = 0.3 * (rng.exponential(1.0, size=(reps, 1, n)) - 1.0)
    a2 = rng.normal(0.0, 0.15, size=(reps, 1, n))
    a3 = rng.normal(0.0, 0.1, size=(reps, 1, n))
    eps = rng.normal(0.0, 0.05, size=(reps, K, n))
    S = s[None, :, None]
    bump = 4 * s * (1 - s)
    loss = (
        d
        + g * S
        + a1 * np.sin(np.pi * S)
        + a2 * np.sin(2 * np.pi * S)
        + a3 * np.sin(3 * np.pi * S)
        + eps
        + h * bump[None, :, None]
    )
    return loss, s, max(0.0, float((h * bump).max()))


def old_method(
    num: np.ndarray, s: np.ndarray, rng: np.random.Generator, draws: int
) -> dict[str, np.ndarray]:
    """The percentile bootstrap of the maximum (Basin before the band): (reps, K, n) → lo, hi."""
    reps, K, n = num.shape
    lo, hi = np.empty(reps), np.empty(reps)
    for r in range(reps):
        idx = rng.integers(0, n, size=(draws, n))
        flat = (np.arange(draws)[:, None] * n + idx).ravel()
        C = np.bincount(flat, minlength=draws * n).reshape(draws, n) / n
        m = C @ num[r].T  # (draws, K)
        chord = (1 - s)[None, :] * m[:, :1] + s[None, :] * m[:, -1:]
        lo[r], hi[r] = np.percentile((m - chord).max(axis=1), [2.5, 97.5])
    return {"lo": lo, "hi": hi}


def calibrate(
    method: str,
    h: float,
    K: int,
    n: int,
    *,
    reps: int,
    draws: int,
    seed: int = 0,
    chunk: int = 50,
    tokens: bool = False,
) -> dict[str, float]:
    """Coverage and the "above 0" rate of ``method`` over ``reps`` synthetic evaluation sets.

    ``tokens``: a language model's token-mean loss instead — text i has Tᵢ ~ 1 + Poisson(20)
    tokens and summed NLL Tᵢ·lᵢ(s); the metric is Σ NLL / Σ T (same true barrier)."""
    rng = np.random.default_rng([seed, K, n, int(round(h * 1000)) + 1000, int(tokens)])
    cover = above = 0
    for start in range(0, reps, chunk):
        c = min(chunk, reps - start)
        num, s, truth = synthetic(rng, c, K, n, h)
        den = None
        if tokens:
            den = 1.0 + rng.poisson(20.0, size=(c, n))
            num = num * den[:, None, :]
        if method == "new":
            out = band_arrays(num, s, den=den, rng=rng, draws=draws)
        elif tokens:
            raise ValueError("the old method is measured on means only")
        else:
            out = old_method(num, s, rng, draws)
        tol = 1e-12
        cover += int(((out["lo"] <= truth + tol) & (truth - tol <= out["hi"])).sum())
        above += int((out["lo"] > tol).sum())
    return {"coverage": cover / reps, "above0": above / reps}


def table(
    methods: tuple[str, ...] = ("old", "new"),
    *,
    reps: int,
    draws: int,
    barriers: tuple[float, ...] = BARRIERS,
    points: tuple[int, ...] = POINTS,
    examples: tuple[int, ...] = EXAMPLES,
) -> list[dict[str, float | int | str]]:
    rows: list[dict[str, float | int | str]] = []
    for method, h, K, n in itertools.product(methods, barriers, points, examples):
        rows.append(
            {
                "method": method,
                "h": h,
                "points": K,
                "n": n,
                **calibrate(method, h, K, n, reps=reps, draws=draws),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--methods", default="old,new")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    print(
        f"reps {args.reps}, bootstrap draws {args.draws}; 'above 0' = interval's lower end > 0 "
        "('not connected'): false for h ≤ 0, power for h > 0"
    )
    print("| method | h | points | n | coverage | above 0 |")
    print("|---|---|---|---|---|---|", flush=True)
    for method, h, K, n in itertools.product(args.methods.split(","), BARRIERS, POINTS, EXAMPLES):
        r = calibrate(method, h, K, n, reps=args.reps, draws=args.draws)
        print(
            f"| {method} | {h:g} | {K} | {n} | {r['coverage']:.3f} | {r['above0']:.3f} |",
            flush=True,
        )
    print(f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
