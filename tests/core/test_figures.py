"""Figure builders on hand-built result documents: what a user sees in the plots."""

from __future__ import annotations

import math
import random

import plotly.graph_objects as go
import pytest

from basin import figures
from basin.analysis.barrier import chord_barrier
from basin.grid import linspace, order_2d


def _linear_doc(n: int = 11, *, shuffle: bool = True, summary: dict | None = None) -> dict:
    alphas = linspace(0.0, 1.0, n)
    # loss: bump in the middle (barrier 0.5 over a chord from 0.2 to 0.4 at α=0.5)
    pts = [
        {"index": i, "coords": {"alpha": a},
         "metrics": {"loss": 0.2 + 0.2 * a + 0.5 * math.sin(math.pi * a), "accuracy": 0.9 - 0.3 * math.sin(math.pi * a)}}
        for i, a in enumerate(alphas)
    ]
    if shuffle:
        random.Random(0).shuffle(pts)
    return {
        "spec": {"path": {"type": "linear", "a": "ft_a", "b": "ft_b", "points": n, "range": [0.0, 1.0]},
                 "dataset": "d", "task": "classification", "metrics": ["loss", "accuracy"]},
        "points": pts,
        "anchors": [{"name": "ft_a", "coords": {"alpha": 0.0}}, {"name": "ft_b", "coords": {"alpha": 1.0}}],
        "summary": summary or {},
    }


def _plane_doc(nx: int = 5, ny: int = 4, keep: int | None = None, ptype: str = "plane") -> dict:
    xs, ys = linspace(-1.0, 2.0, nx), linspace(-0.5, 1.0, ny)
    order = order_2d(nx, ny)[: keep or nx * ny]
    pts = [{"index": i, "coords": {"x": xs[i % nx], "y": ys[i // nx]},
            "metrics": {"loss": (xs[i % nx] - 0.5) ** 2 + ys[i // nx] ** 2}} for i in order]
    path = {"type": ptype, "a": "ft_a", "b": "ft_b", "c": "ft_c", "resolution": [nx, ny]}
    anchors = [{"name": "ft_a", "coords": {"x": 0.0, "y": 0.0}},
               {"name": "ft_b", "coords": {"x": 1.0, "y": 0.0}},
               {"name": "ft_c", "coords": {"x": 0.4, "y": 0.7}}]
    if ptype == "trajectory":
        path = {"type": "trajectory", "checkpoints": ["s1", "s2", "s3"], "basis": "pca", "resolution": [nx, ny]}
        # deliberately out of training order in the anchors list
        anchors = [{"name": "s3", "coords": {"x": 1.0, "y": 0.5}, "step": 300},
                   {"name": "s1", "coords": {"x": -0.5, "y": 0.0}, "step": 100},
                   {"name": "s2", "coords": {"x": 0.2, "y": 0.4}, "step": 200}]
    return {"spec": {"path": path, "dataset": "d", "metrics": ["loss"]}, "points": pts, "anchors": anchors}


def _meta(fig: go.Figure, meta: str) -> list:
    return [t for t in fig.data if t.meta == meta]


def test_line_sorted_by_alpha_with_named_endpoints_chord_and_barrier():
    doc = _linear_doc()
    fig = figures.line_figure(doc, "loss")
    (curve,) = _meta(fig, "curve")
    assert list(curve.x) == sorted(curve.x) and len(curve.x) == 11
    anchors = _meta(fig, "anchor")
    assert [a.text[0] for a in anchors] == ["ft_a", "ft_b"]
    assert [a.x[0] for a in anchors] == [0.0, 1.0]
    (chord,) = _meta(fig, "chord")
    assert list(chord.y) == pytest.approx([0.2, 0.4])
    (ann,) = [a for a in fig.layout.annotations if a.name == "barrier"]
    assert ann.text == "barrier 0.5 nats at α = 0.50"
    assert fig.layout.xaxis.title.text == "α" and fig.layout.yaxis.title.text == "loss (nats)"


def test_line_accuracy_in_percent_and_barrier_is_drop_below_chord():
    fig = figures.line_figure(_linear_doc(), "accuracy")
    assert fig.layout.yaxis.title.text == "accuracy (%)"
    (curve,) = _meta(fig, "curve")
    assert max(curve.y) == pytest.approx(90.0)
    (ann,) = [a for a in fig.layout.annotations if a.name == "barrier"]
    assert ann.text.startswith("barrier 30 pts at α = 0.50")


def test_line_prefers_the_summary_barrier():
    doc = _linear_doc(summary={"barrier": {"loss": {"value": 0.123, "alpha": 0.4}}})
    fig = figures.line_figure(doc, "loss")
    assert [a.text for a in fig.layout.annotations if a.name == "barrier"] == ["barrier 0.123 nats at α = 0.40"]


def test_line_partial_run_without_endpoint_has_no_chord_or_barrier():
    doc = _linear_doc()
    doc["points"] = [p for p in doc["points"] if p["coords"]["alpha"] != 1.0][:4]
    fig = figures.line_figure(doc, "loss")
    assert len(_meta(fig, "curve")[0].x) == 4
    assert not _meta(fig, "chord")
    assert not [a for a in fig.layout.annotations if a.name == "barrier"]


def test_line_names_map_store_ids_to_names_and_ids_are_shortened():
    doc = _linear_doc()
    sha = "ab" * 32
    doc["anchors"][0]["name"] = sha
    fig = figures.line_figure(doc, "loss")
    assert _meta(fig, "anchor")[0].text[0] == sha[:10]
    fig = figures.line_figure(doc, "loss", names={sha: "seed-0"})
    assert _meta(fig, "anchor")[0].text[0] == "seed-0"


def test_figures_measure_the_barrier_with_the_analysis_function():
    # chord from (0, 1) to (1, 3); value 2.5 at α=0.5 where the chord is 2 → excess 0.5
    b = chord_barrier([(0.0, 1.0), (0.5, 2.5), (1.0, 3.0), (1.5, 9.0)], (0.0, 1.0), (1.0, 3.0))
    assert b == {"value": pytest.approx(0.5), "alpha": 0.5}  # α=1.5 (extrapolated) is ignored
    assert not hasattr(figures, "compute_barrier")  # one implementation: basin.analysis.barrier


def test_plane_partial_grid_has_none_holes_and_fills_in():
    nx, ny = 5, 4
    partial = figures.plane_figure(_plane_doc(nx, ny, keep=4), "loss", kind="heatmap")
    grid = _meta(partial, "grid")[0]
    z = [list(r) for r in grid.z]
    assert len(z) == ny and all(len(r) == nx for r in z)
    filled = [(iy, ix) for iy in range(ny) for ix in range(nx) if z[iy][ix] is not None]
    assert sorted(filled) == [(0, 0), (0, nx - 1), (ny - 1, 0), (ny - 1, nx - 1)]  # the corners first
    # the axes are known from the corners already: the whole grid is placed correctly
    assert list(grid.x) == pytest.approx(linspace(-1.0, 2.0, nx))
    assert list(grid.y) == pytest.approx(linspace(-0.5, 1.0, ny))
    full = figures.plane_figure(_plane_doc(nx, ny), "loss", kind="heatmap")
    zf = _meta(full, "grid")[0].z
    assert all(v is not None for row in zf for v in row)
    # index = iy*nx + ix: row 1, column 2 is x=0.5, y=0.0 → loss 0.0
    assert zf[1][2] == pytest.approx((0.5 - 0.5) ** 2 + 0.0**2)


@pytest.mark.parametrize("kind", ["contour", "heatmap", "surface"])
def test_plane_marks_and_labels_the_three_anchors(kind):
    fig = figures.plane_figure(_plane_doc(), "loss", kind=kind)
    anchors = _meta(fig, "anchor")
    assert [a.text[0] for a in anchors] == ["ft_a", "ft_b", "ft_c"]
    assert [(a.x[0], a.y[0]) for a in anchors] == [(0.0, 0.0), (1.0, 0.0), (0.4, 0.7)]
    grid = _meta(fig, "grid")[0]
    assert grid.type == kind and grid.colorscale[0][1] == "#440154"  # Viridis: low loss dark
    assert not grid.reversescale
    if kind == "surface":
        assert all(a.type == "scatter3d" and a.z[0] is not None for a in anchors)


def test_plane_accuracy_reverses_colours_so_good_regions_are_dark():
    doc = _plane_doc()
    for p in doc["points"]:
        p["metrics"]["accuracy"] = 0.5
    fig = figures.plane_figure(doc, "accuracy")
    assert _meta(fig, "grid")[0].reversescale is True
    assert _meta(fig, "grid")[0].z[0][0] == pytest.approx(50.0)


def test_trajectory_path_follows_training_order_with_step_labels():
    doc = _plane_doc(ptype="trajectory")
    for kind in ("contour", "surface"):
        fig = figures.plane_figure(doc, "loss", kind=kind)
        (path,) = _meta(fig, "trajectory")
        assert list(path.x) == [-0.5, 0.2, 1.0]
        assert list(path.text) == ["step 100", "step 200", "step 300"]
        assert "lines" in path.mode and "markers" in path.mode


def test_figure_for_and_report_figures_dispatch():
    assert _meta(figures.figure_for(_linear_doc()), "curve")[0].name == "loss"
    assert figures.figure_for(_plane_doc()).data[0].type == "contour"
    assert figures.figure_for(_plane_doc(), kind="surface").data[0].type == "surface"
    assert len(figures.report_figures(_linear_doc())) == 2  # loss, accuracy
    kinds = [f.data[0].type for f in figures.report_figures(_plane_doc(ptype="trajectory"))]
    assert kinds == ["contour", "surface"]
    assert figures.report_figures({"spec": _linear_doc()["spec"], "points": []}) == []
    with pytest.raises(ValueError, match="kind"):
        figures.plane_figure(_plane_doc(), "loss", kind="pie")


def test_overlay_has_one_curve_per_run_with_endpoints():
    a, b = _linear_doc(), _linear_doc(n=5)
    b["spec"]["name"] = "seed pair 2"
    fig = figures.overlay_figure([a, b], "loss")
    curves = _meta(fig, "curve")
    assert [c.name for c in curves] == ["ft_a → ft_b", "seed pair 2"]
    assert [len(c.x) for c in curves] == [11, 5]
    assert len(_meta(fig, "anchor")) == 2 and all(len(t.x) == 2 for t in _meta(fig, "anchor"))


def test_line_figure_marks_endpoints_that_are_off_the_alpha_grid():
    doc = {
        "spec": {"path": {"type": "linear", "a": "A", "b": "B", "points": 3, "range": [-0.5, 1.5]},
                 "metrics": ["loss"]},
        "points": [{"index": i, "coords": {"alpha": a}, "metrics": {"loss": v}}
                   for i, (a, v) in enumerate([(-0.5, 2.0), (0.5, 1.5), (1.5, 2.5)])],
        "anchors": [{"name": "A", "coords": {"alpha": 0.0}}, {"name": "B", "coords": {"alpha": 1.0}}],
        "summary": {"endpoints": [{"alpha": 0.0, "metrics": {"loss": 0.5}},
                                  {"alpha": 1.0, "metrics": {"loss": 0.7}}]},
    }
    from basin.figures import line_figure

    fig = line_figure(doc, "loss")
    chord = [t for t in fig.data if t.meta == "chord"]
    assert len(chord) == 1 and list(chord[0].y) == [0.5, 0.7]
    assert [t.text[0] for t in fig.data if t.meta == "anchor"] == ["A", "B"]


def test_figures_name_checkpoints_as_the_service_document_does():
    a, b = "a" * 64, "b" * 64
    doc = {
        "spec": {"path": {"type": "linear", "a": a, "b": b, "points": 2}, "metrics": ["loss"]},
        "points": [{"index": 0, "coords": {"alpha": 0.0}, "metrics": {"loss": 1.0}},
                   {"index": 1, "coords": {"alpha": 1.0}, "metrics": {"loss": 2.0}}],
        "anchors": [{"name": a, "coords": {"alpha": 0.0}}, {"name": b, "coords": {"alpha": 1.0}}],
        "names": {a: "seed1", b: "seed2"},
    }
    from basin.figures import line_figure

    fig = line_figure(doc, "loss")
    assert "seed1" in fig.layout.title.text and "seed2" in fig.layout.title.text
    assert [t.text[0] for t in fig.data if t.meta == "anchor"] == ["seed1", "seed2"]


def test_line_labels_a_partial_range_barrier():
    # the range excluded α = 1: the chord joined the range ends, not the checkpoints
    doc = _linear_doc(summary={"barrier": {"loss": {"value": 0.2, "alpha": 0.4, "start": 0.0, "end": 0.8,
                                                    "partial": True}}})
    fig = figures.line_figure(doc, "loss")
    (text,) = [a.text for a in fig.layout.annotations if a.name == "barrier"]
    assert text.startswith("partial-range barrier (chord α = 0 → 0.8) 0.2 nats")


def test_a_document_that_maps_ids_to_themselves_is_still_drawn_short_and_long_names_are_cut():
    # documents of runs made from the form before names were recorded: {id: id}
    a, b = "a" * 64, "b" * 64
    doc = {
        "spec": {"path": {"type": "linear", "a": a, "b": b, "points": 2}, "metrics": ["loss"]},
        "points": [{"index": 0, "coords": {"alpha": 0.0}, "metrics": {"loss": 1.0}},
                   {"index": 1, "coords": {"alpha": 1.0}, "metrics": {"loss": 2.0}}],
        "anchors": [{"name": a, "coords": {"alpha": 0.0}}, {"name": b, "coords": {"alpha": 1.0}}],
        "names": {a: a, b: b},
    }
    fig = figures.line_figure(doc, "loss")
    assert [t.text[0] for t in _meta(fig, "anchor")] == [a[:10], b[:10]]
    assert a not in fig.layout.title.text
    long = "bert-base-uncased-finetuned-on-sst2-seed-1234567"
    doc["names"] = {a: long, b: "seed2"}
    fig = figures.line_figure(doc, "loss")
    first = _meta(fig, "anchor")[0]
    assert first.text[0] == long[: figures.LABEL_MAX - 1] + "…" and len(first.text[0]) == figures.LABEL_MAX
    assert first.hovertext[0] == long  # the whole name on hover
    assert not any(t.showlegend is not False for t in _meta(fig, "anchor"))  # labelled, not in the legend
    doc["spec"]["name"] = "a run with a very long name " * 6
    fig = figures.line_figure(doc, "loss")
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) > 1 and all(len(x) <= figures.TITLE_WRAP for x in lines)
    assert fig.layout.margin.t >= 38 + 20 * len(lines)  # room for every line above the legend


def _flat_doc(values: list[float], metric: str = "accuracy") -> dict:
    n = len(values)
    alphas = linspace(0.0, 1.0, n)
    return {"spec": {"path": {"type": "linear", "a": "ft_a", "b": "ft_b", "points": n}, "metrics": [metric]},
            "points": [{"index": i, "coords": {"alpha": a}, "metrics": {metric: v}}
                       for i, (a, v) in enumerate(zip(alphas, values, strict=True))],
            "anchors": [{"name": "ft_a", "coords": {"alpha": 0.0}}, {"name": "ft_b", "coords": {"alpha": 1.0}}]}


@pytest.mark.parametrize("summary_value", [None, -0.0, -1e-12, 3e-8])
def test_a_zero_barrier_says_no_barrier_and_never_minus_zero(summary_value):
    doc = _flat_doc([0.75, 0.75, 0.75 + 1e-9, 0.75])  # a flat curve, float noise above the chord
    if summary_value is not None:
        doc["summary"] = {"barrier": {"accuracy": {"value": summary_value, "alpha": 0.0, "start": 0.0,
                                                   "end": 1.0, "partial": False}}}
    fig = figures.line_figure(doc, "accuracy")
    (ann,) = [a for a in fig.layout.annotations if a.name == "barrier"]
    assert ann.text == "no barrier"
    assert not _meta(fig, "barrier")  # no segment pinned to an endpoint
    from basin.report import summarize

    doc["summary"] = {"barrier": {"accuracy": {"value": -0.0, "alpha": 0.0, "start": 0.0, "end": 1.0}}}
    text = summarize(doc)
    assert "no barrier" in text and "-0 " not in text and "−0" not in text


def test_a_barrier_near_the_right_end_is_labelled_towards_the_middle():
    doc = _flat_doc([1.0, 1.0, 1.0, 1.5, 2.0], metric="loss")  # chord 1→2; 1.5 at α=0.75 sits on it
    doc["points"][2]["metrics"]["loss"] = 1.0
    doc["points"][3]["metrics"]["loss"] = 2.5  # 0.75 above the chord at α = 0.75
    fig = figures.line_figure(doc, "loss")
    (ann,) = [a for a in fig.layout.annotations if a.name == "barrier"]
    assert ann.text == "barrier 0.75 nats at α = 0.75"
    assert ann.xanchor == "right" and ann.ax < 0


@pytest.mark.parametrize("kind", ["contour", "heatmap", "surface"])
def test_planes_in_parameter_units_are_drawn_with_equal_scales_by_default(kind):
    doc = _plane_doc()  # x over 3 units, y over 1.5
    fig = figures.plane_figure(doc, "loss", kind=kind)
    assert fig.layout.meta["equal_axes"] is True
    if kind == "surface":
        assert fig.layout.scene.aspectmode == "manual"
        assert fig.layout.scene.aspectratio.x == pytest.approx(1.0)
        assert fig.layout.scene.aspectratio.y == pytest.approx(0.5)
    else:
        assert fig.layout.yaxis.scaleanchor == "x" and fig.layout.yaxis.scaleratio == 1
    box = figures.plane_figure(doc, "loss", kind=kind, equal=False)  # the fill-the-box view
    assert box.layout.meta["equal_axes"] is False
    assert box.layout.yaxis.scaleanchor is None and box.layout.scene.aspectmode is None
    # coefficients of two different vectors: not equal units, so the box is filled by default
    assert figures.plane_figure(_plane_doc(ptype="task_plane"), "loss", kind=kind).layout.meta["equal_axes"] is False


def _ensemble_doc(n: int = 5, *, with_values: bool = True) -> dict:
    """A causal-LM run with output ensembling and generations, as the engine writes it
    (docs/contracts.md): each point's ``ensemble`` equals its ``metrics`` at α = 0 and 1."""
    alphas = linspace(-0.5, 1.5, n)
    pts = []
    for i, a in enumerate(alphas):
        loss = 2.0 + math.sin(math.pi * a)
        ens = loss if a in (0.0, 1.0) else 2.0 + 0.2 * a
        pts.append({"index": i, "coords": {"alpha": a}, "metrics": {"loss": loss, "sentiment": 0.2 + 0.3 * a},
                    **({"ensemble": {"loss": ens}} if with_values else {}),
                    "samples": [{"prompt": "p", "text": f"t{i}", "sentiment": 0.5}]})
    random.Random(1).shuffle(pts)
    return {"spec": {"path": {"type": "linear", "a": "neg", "b": "pos", "points": n, "range": [-0.5, 1.5]},
                     "task": "causal_lm", "metrics": ["loss", "sentiment"], "ensemble": True,
                     "generation": {"samples_per_prompt": 1}},
            "points": pts,
            "anchors": [{"name": "neg", "coords": {"alpha": 0.0}}, {"name": "pos", "coords": {"alpha": 1.0}}]}


def test_output_ensembling_is_a_dashed_trace_beside_weight_interpolation():
    doc = _ensemble_doc()
    fig = figures.line_figure(doc, "loss")
    (curve,) = _meta(fig, "curve")
    (ens,) = _meta(fig, "ensemble")
    assert (curve.name, ens.name) == ("weight interpolation", "output ensemble")
    assert ens.line.dash == "dash"
    assert list(ens.x) == sorted(ens.x) == list(curve.x)
    by_alpha = {p["coords"]["alpha"]: p["ensemble"]["loss"] for p in doc["points"]}
    assert list(ens.y) == pytest.approx([by_alpha[a] for a in ens.x])
    # the two meet at the checkpoints (α = 0 and 1)
    for a in (0.0, 1.0):
        assert ens.y[list(ens.x).index(a)] == pytest.approx(curve.y[list(curve.x).index(a)])
    assert sorted(ens.customdata) == list(range(5))  # point indices: a click picks the point
    # no ensemble values for this metric: the trace is there (patched live), empty
    assert len(_meta(figures.line_figure(doc, "sentiment"), "ensemble")[0].x) == 0
    # declared in the spec but no values yet (the first draw of a live run): present and empty
    early = figures.line_figure(_ensemble_doc(with_values=False), "loss")
    assert len(_meta(early, "ensemble")) == 1 and len(_meta(early, "ensemble")[0].x) == 0
    # a run without ensembling draws none, and names its curve after the metric
    plain = figures.line_figure(_linear_doc(), "loss")
    assert not _meta(plain, "ensemble") and _meta(plain, "curve")[0].name == "loss"


def test_the_report_and_basin_plot_draw_the_ensemble_and_no_barrier_for_sentiment(tmp_path):
    from basin.cli import main
    from basin.report import render_report

    doc = _ensemble_doc()
    figs = figures.report_figures(doc)
    assert [len(_meta(f, "ensemble")) for f in figs] == [1, 1]
    sentiment = figs[1]
    assert not [a for a in sentiment.layout.annotations if a.name == "barrier"]  # not a loss: no barrier
    assert "output ensemble" in render_report(doc)
    src = tmp_path / "doc.json"
    src.write_text(__import__("json").dumps(doc))
    assert main(["plot", str(src), "-o", str(tmp_path / "r.html")]) == 0
    assert "output ensemble" in (tmp_path / "r.html").read_text()


def test_per_layer_distances_are_drawn_in_model_order_and_in_the_report(tmp_path):
    from basin.engine import run
    from basin.resolve import FileResolver
    from basin.spec import parse_spec
    from tests.factories import build_gpt2, write_lm_dataset

    a, b = build_gpt2(tmp_path / "a", seed=0), build_gpt2(tmp_path / "b", seed=0, steps=4)
    data = write_lm_dataset(tmp_path / "t.jsonl", n=4)
    doc = run(parse_spec({"path": {"type": "linear", "a": str(a), "b": str(b), "points": 3},
                          "dataset": str(data), "task": "causal_lm"}), FileResolver(), progress=False)
    rows = doc["summary"]["distance"]["per_layer"]
    fig = figures.distance_figure(doc)
    bars = next(t for t in fig.data if t.meta == "distance")
    cos = next(t for t in fig.data if t.meta == "cosine")
    assert list(bars.x) == ["embeddings", "layer 0", "layer 1", "rest"] == [r["name"] for r in rows]
    assert list(bars.y) == pytest.approx([r["scaled"] for r in rows])
    assert list(cos.y) == pytest.approx([r["cosine"] for r in rows])
    assert all(y > 0 for y in bars.y)  # four steps of Adam moved every layer
    assert any(getattr(t, "meta", None) == "distance" for f in figures.report_figures(doc) for t in f.data)
    # planes and old documents have no per-layer distances: no figure
    assert figures.distance_figure({"summary": {"distance": {"l2": 1.0}}}) is None
    assert figures.distance_figure({"summary": {"min": {}}}) is None


def test_the_report_lists_generated_samples_by_alpha_escaped():
    """A generation run's HTML report carries its samples (readable offline, as on the run page),
    sorted by α, with model output escaped; a run without samples has no such section."""
    from basin.report import render_report

    doc = {"spec": {"task": "generation", "path": {"type": "linear", "a": "a", "b": "b"}},
           "points": [{"index": 1, "coords": {"alpha": 1.0}, "metrics": {"sentiment": 0.9},
                       "samples": [{"prompt": "The film", "text": "was <b>great</b>", "sentiment": 0.91234}]},
                      {"index": 0, "coords": {"alpha": 0.0}, "metrics": {"sentiment": 0.1},
                       "samples": [{"prompt": "The film", "text": "was dull", "sentiment": 0.05}]}]}
    page = render_report(doc, figures=[])
    section = page.split("<h2>Generated samples</h2>", 1)[1]
    assert section.index("α = 0") < section.index("α = 1") < section.index("&lt;b&gt;great")
    assert "<b>great" not in page and "0.91234" in section and "was dull" in section
    assert "Generated samples" not in render_report(_linear_doc(), figures=[])
