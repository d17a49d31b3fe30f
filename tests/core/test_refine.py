"""Adaptive refinement (``refine: adaptive``): the chooser on synthetic curves and surfaces
(pure Python), the spec's checks, and a run through the real engine on a tiny model."""

from __future__ import annotations

import math

import pytest

from basin import FileResolver, run
from basin.analysis.barrier import barrier
from basin.errors import InvalidSpec
from basin.grid import linspace
from basin.refine import RefineSpec, budget_of, coarse_indices, interpolate_2d, leaves_2d, next_wave
from basin.spec import parse_spec
from tests.core import helpers


def _narrow(a: float, centre: float = 0.41, width: float = 0.03) -> float:
    """A tilted line with a barrier narrower than the coarse spacing (0.125 on 129 points)."""
    return 0.3 + 0.2 * a + math.exp(-(((a - centre) / width) ** 2))


def _refine_1d(f, n: int, r: RefineSpec) -> dict[int, float]:
    xs = linspace(0.0, 1.0, n)
    got: dict[int, float] = {}
    while wave := next_wave(r, (n,), got):
        assert not set(wave) & set(got), "a point is never chosen twice"
        got.update({i: f(xs[i]) for i in wave})
    return got


@pytest.mark.parametrize("centre", [0.41, 0.52, 0.6])
def test_adaptive_refinement_finds_a_narrow_barrier_with_40_percent_of_the_points(centre):
    n = 129  # fine spacing 1/128; levels 4: the coarse grid has 9 points, 1/8 apart
    xs = linspace(0.0, 1.0, n)
    f = lambda a: _narrow(a, centre)  # noqa: E731
    uniform = barrier([(x, f(x)) for x in xs], lo=0.0, hi=1.0)
    r = RefineSpec(budget=int(0.4 * n), levels=4)
    got = _refine_1d(f, n, r)
    assert len(got) <= 0.4 * n
    assert set(coarse_indices((n,), 4)) <= set(got)
    found = barrier([(xs[i], v) for i, v in got.items()], lo=0.0, hi=1.0)
    assert abs(found["value"] - uniform["value"]) <= 1e-3
    assert abs(found["alpha"] - uniform["alpha"]) <= 1 / 128
    # the coarse grid alone misses it by far: the refinement is what found it
    coarse = barrier([(xs[i], f(xs[i])) for i in coarse_indices((n,), 4)], lo=0.0, hi=1.0)
    assert uniform["value"] - coarse["value"] > 0.1


def test_a_bump_in_an_end_interval_is_found():
    """A bump at α = 0.06, inside the first coarse interval [0, 0.125], beside a steep start and a
    gentle wave elsewhere: end nodes get a deviation score (their inner neighbours' line,
    extrapolated), so the end interval competes with the others for the budget."""
    n = 129

    def f(a: float) -> float:
        return 2 * max(0.0, 0.25 - a) + 0.2 * math.sin(3 * math.pi * a) ** 2 + math.exp(-(((a - 0.06) / 0.02) ** 2) / 2)

    xs = linspace(0.0, 1.0, n)
    uniform = barrier([(x, f(x)) for x in xs], lo=0.0, hi=1.0)
    got = _refine_1d(f, n, RefineSpec(budget=25, levels=4))
    found = barrier([(xs[i], v) for i, v in got.items()], lo=0.0, hi=1.0)
    assert uniform["value"] > 0.9 and uniform["alpha"] < 0.125
    assert found["value"] == pytest.approx(uniform["value"], abs=0.05)  # was 0.12 of 0.95


def test_the_first_wave_is_the_coarse_grid_coarse_to_fine_and_the_budget_holds():
    r = RefineSpec(budget=6, levels=2, wave=2)
    assert next_wave(r, (9,), {}) == [0, 8, 4]
    got = _refine_1d(lambda a: a * a, 9, r)
    assert len(got) == 6
    assert budget_of(RefineSpec(levels=2), (33,)) == 14  # default: 40 % of the fine grid


def test_a_straight_line_is_refined_evenly_and_flat_regions_are_left_alone():
    # a kink at α = 0.5: the intervals beside it go first
    r = RefineSpec(budget=9, levels=3, wave=2)
    got = _refine_1d(lambda a: abs(a - 0.5), 33, r)
    extra = sorted(set(got) - set(coarse_indices((33,), 3)))
    assert extra and all(abs(i - 16) <= 4 for i in extra)


def test_plane_cells_with_the_largest_range_are_split():
    nx = ny = 17
    r = RefineSpec(budget=80, levels=3)  # coarse 3 × 3; 80 of the 289 points (28 %)
    xs = linspace(0.0, 1.0, nx)

    def f(i: int) -> float:  # a narrow basin at (0.3, 0.6), flat elsewhere
        return -math.exp(-((xs[i % nx] - 0.3) ** 2 + (xs[i // nx] - 0.6) ** 2) / 0.1**2)

    got: dict[int, float] = {}
    while wave := next_wave(r, (nx, ny), got):
        got.update({i: f(i) for i in wave})
    assert 9 < len(got) <= 80
    # the basin's floor is found as the whole fine grid has it, and the points crowd around it
    assert min(got.values()) == pytest.approx(min(f(i) for i in range(nx * ny)), abs=1e-9)
    extra = [(xs[i % nx], xs[i // nx]) for i in set(got) - set(coarse_indices((nx, ny), 3))]
    near = sum(math.hypot(x - 0.3, y - 0.6) <= 0.3 for x, y in extra)
    assert near > 0.5 * len(extra)
    # every leaf cell of the quadtree has its corners measured, so the picture fills in
    z = [[got.get(iy * nx + ix) for ix in range(nx)] for iy in range(ny)]
    full = interpolate_2d((nx, ny), 3, z)
    assert all(v is not None for row in full for v in row)
    assert all(full[i // nx][i % nx] == v for i, v in got.items())
    assert sum(s * s for _, _, s in leaves_2d((nx, ny), 3, got)) == (nx - 1) * (ny - 1)


def test_refine_spec_is_checked():
    base = {"path": {"type": "linear", "a": "x", "b": "y", "points": 33}, "dataset": "d"}
    assert parse_spec({**base, "refine": "adaptive"}).refine == RefineSpec()
    assert parse_spec({**base, "refine": {"budget": 12, "levels": 3}}).planned_points == 12
    with pytest.raises(InvalidSpec, match=r"k·8 \+ 1 nodes.*e\.g\. 25"):
        parse_spec({**base, "path": {**base["path"], "points": 26}, "refine": {"levels": 3}})
    with pytest.raises(InvalidSpec, match="refine.budget 40 is more than the fine grid's 33"):
        parse_spec({**base, "refine": {"budget": 40}})
    with pytest.raises(InvalidSpec, match="refine.metric 'f1' is not one of the run's metrics"):
        parse_spec({**base, "refine": {"metric": "f1"}})
    with pytest.raises(InvalidSpec, match="refine.mode"):
        parse_spec({**base, "refine": "sideways"})


def test_an_adaptive_run_through_the_engine_evaluates_a_subset_of_the_uniform_grid(classifier_family):
    path = {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 9, "range": [-0.5, 1.5]}
    resolver = FileResolver(classifier_family["data"].parent)
    uniform = run(helpers.cpu_spec({"path": path, "dataset": "eval.csv"}), resolver, progress=False)
    seen: list[int] = []
    spec = helpers.cpu_spec({"path": path, "dataset": "eval.csv",
                             "refine": {"budget": 6, "levels": 2, "wave": 1}})
    doc = run(spec, resolver, on_point=lambda r: seen.append(r["index"]), progress=False)
    assert doc["status"] == "done" and len(doc["points"]) == 6
    assert seen[:3] == [0, 8, 4]  # the coarse grid first
    full = {p["index"]: p for p in uniform["points"]}
    for p in doc["points"]:  # same points, same values: the document format is unchanged
        assert p["coords"] == full[p["index"]]["coords"]
        assert p["metrics"]["loss"] == pytest.approx(full[p["index"]]["metrics"]["loss"], abs=1e-6)
    # the barrier is computed from the measured points
    measured = barrier([(p["coords"]["alpha"], p["metrics"]["loss"]) for p in doc["points"]], lo=-0.5, hi=1.5)
    assert doc["summary"]["barrier"]["loss"]["value"] == pytest.approx(measured["value"])
    assert doc["spec"]["refine"]["budget"] == 6
    # every metric's barrier says which metric placed the points (loss, the first), and its words too
    from basin.analysis.barrier import barrier_sentence

    assert {b["points_chosen_by"] for b in doc["summary"]["barrier"].values()} == {"loss"}
    acc = doc["summary"]["barrier"]["accuracy"]
    assert "adaptive points placed for loss, not accuracy" in barrier_sentence(acc, "accuracy")
    assert "points_chosen_by" not in uniform["summary"]["barrier"]["loss"]
    # α = 0 and 1 (the checkpoints) are always measured when the fine grid has them: the
    # barrier's chord joins the checkpoints, not the range's ends
    alphas = {p["coords"]["alpha"] for p in doc["points"]}
    assert {0.0, 1.0} <= alphas and not doc["summary"]["barrier"]["loss"].get("partial")
    assert spec.refine_required == [2, 6] and seen[3:5] == [2, 6]


def test_figures_draw_an_adaptive_run_through_its_measured_points():
    from basin import figures

    nx = ny = 5
    xs = linspace(0.0, 1.0, nx)
    r = RefineSpec(budget=14, levels=1)
    got: dict[int, float] = {}
    while wave := next_wave(r, (nx, ny), got):
        got.update({i: (xs[i % nx] - 0.2) ** 2 + xs[i // nx] for i in wave})
    doc = {"spec": {"path": {"type": "plane", "a": "a", "b": "b", "c": "c", "resolution": [nx, ny]},
                    "metrics": ["loss"], "refine": r.model_dump(mode="json")},
           "points": [{"index": i, "coords": {"x": xs[i % nx], "y": xs[i // nx]}, "metrics": {"loss": v}}
                      for i, v in got.items()],
           "anchors": [], "summary": {}}
    fig = figures.plane_figure(doc, "loss", "contour")
    z = fig.data[0].z
    assert all(v is not None for row in z for v in row)  # interpolated inside the refined cells
    assert z[1][1] == pytest.approx((z[0][0] + z[0][2] + z[2][0] + z[2][2]) / 4) or 6 in got
    marks = next(t for t in fig.data if t.meta == "measured")
    assert len(marks.x) == len(got) < nx * ny
    line = {"spec": {"path": {"type": "linear", "a": "a", "b": "b", "points": 9}, "metrics": ["loss"],
                     "refine": {"levels": 2}},
            "points": [{"index": i, "coords": {"alpha": i / 8}, "metrics": {"loss": v}}
                       for i, v in ((0, 1.0), (4, 2.0), (8, 1.0), (3, 1.9))]}
    curve = figures.line_figure(line, "loss").data[0]
    assert list(curve.x) == [0.0, 0.375, 0.5, 1.0]  # a line through the measured points, in α order
