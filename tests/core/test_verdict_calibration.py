"""Monte-Carlo calibration of the barrier interval and the connectivity verdict (issue 23).

Synthetic per-example losses with known barriers −0.02, 0, 0.02, 0.1 at 11, 26 and 51
points, n = 64 and 512 (``bench/verdict_calibration.py`` has the generator and prints the
before/after table of ``docs/verdict.md``). Fails if the interval's lower end is above 0 —
the "not connected" claim — for more than 5 % of flat or below-chord paths, or if the
interval covers a real barrier less than 90 % of the time.

Seeded. ``make test`` runs 100 evaluation sets per case with 200 bootstrap draws (about
10 s); ``BASIN_RELIABILITY=full`` or ``BASIN_SLOW=1`` the full 1000 sets with 1000 draws.
"""

from __future__ import annotations

import os

import pytest

from bench.verdict_calibration import BARRIERS, EXAMPLES, POINTS, calibrate, table

FULL = (
    os.environ.get("BASIN_RELIABILITY", "").strip().lower() == "full"
    or os.environ.get("BASIN_SLOW", "").strip() == "1"
)
REPS, DRAWS = (1000, 1000) if FULL else (100, 200)


@pytest.fixture(scope="module")
def rows():
    return table(("new",), reps=REPS, draws=DRAWS)


def test_every_case_is_measured(rows):
    assert {(r["h"], r["points"], r["n"]) for r in rows} == {
        (h, k, n) for h in BARRIERS for k in POINTS for n in EXAMPLES
    }


@pytest.mark.parametrize("h", [h for h in BARRIERS if h <= 0])
def test_flat_or_convex_paths_are_rarely_called_not_connected(rows, h):
    for r in (r for r in rows if r["h"] == h):
        assert r["above0"] <= 0.05, f"false 'not connected' {r['above0']:.3f} at {r}"
        assert r["coverage"] >= 0.95, r  # the true barrier is 0: covered whenever lo = 0


@pytest.mark.parametrize("h", [h for h in BARRIERS if h > 0])
def test_real_barriers_are_covered(rows, h):
    for r in (r for r in rows if r["h"] == h):
        assert r["coverage"] >= 0.90, f"coverage {r['coverage']:.3f} of a barrier {h} at {r}"


def test_a_clear_barrier_is_detected_with_enough_examples(rows):
    # power: a 0.1-nat barrier at n = 512 is above 0 at the 95 % level nearly always
    assert all(r["above0"] >= 0.95 for r in rows if r["h"] == 0.1 and r["n"] == 512)


@pytest.mark.parametrize("h", [0.0, 0.1])
def test_token_mean_losses_of_language_models_are_calibrated_too(h):
    r = calibrate("new", h, 26, 256, reps=REPS, draws=DRAWS, tokens=True)
    if h == 0:
        assert r["above0"] <= 0.05
    assert r["coverage"] >= 0.90
