"""A diverged point (its loss stored as ``null``, issue 24 part 6) in the run page's figures and
summary: skipped in the figure, the other points drawn, no exception."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def run_page():
    from frontend.app import create_dash_app

    create_dash_app()  # registers the pages
    from frontend.pages import run

    return run


def test_a_null_metric_is_skipped_in_a_line_and_a_plane(run_page):
    line = {
        "spec": {
            "path": {"type": "linear", "a": "x", "b": "y", "points": 3},
            "metrics": ["loss", "accuracy"],
        },
        "status": "done",
    }
    pts = [
        {"index": i, "coords": {"alpha": a}, "metrics": {"loss": v, "accuracy": 0.5}}
        for i, (a, v) in enumerate([(0.0, 0.7), (5e29, None), (1e30, None)])
    ]
    figs = run_page.build_figures(line, pts, "heatmap", {})
    ys = [y for t in figs[0]["data"] for y in (t.get("y") or []) if y is not None]
    assert 0.7 in ys and len(ys) >= 1
    assert run_page.summary_rows(line, pts) is not None
    plane = {
        "spec": {
            "path": {"type": "plane", "a": "x", "b": "y", "c": "z", "resolution": [2, 2]},
            "metrics": ["loss"],
        },
        "status": "done",
    }
    grid = [
        {
            "index": i,
            "coords": {"x": float(i % 2), "y": float(i // 2)},
            "metrics": {"loss": None if i == 3 else 0.1 * i},
        }
        for i in range(4)
    ]
    (fig,) = run_page.build_figures(plane, grid, "heatmap", {})
    z = [v for row in fig["data"][0]["z"] for v in row]
    assert 0.2 in [round(v, 6) for v in z if v is not None]
