"""The run page's pure helpers: the sample viewer's table and the summary's barrier lines."""

from __future__ import annotations

import pytest

from basin import figures


@pytest.fixture(scope="module")
def run_page():
    from frontend.app import create_dash_app

    create_dash_app()  # registers the pages
    from frontend.pages import run

    return run


def _texts(component) -> list[str]:
    out: list[str] = []

    def walk(c):
        if isinstance(c, str):
            out.append(c)
        elif isinstance(c, (list, tuple)):
            for x in c:
                walk(x)
        elif hasattr(c, "children"):
            walk(c.children)

    walk(component)
    return out


def test_samples_are_listed_by_alpha_with_their_scores(run_page):
    pts = [{"index": 2, "coords": {"alpha": 0.5}, "metrics": {}, "samples": [{"prompt": "p", "text": "b"}]},
           {"index": 0, "coords": {"alpha": -0.5}, "metrics": {},
            "samples": [{"prompt": "Hello", "text": "world", "sentiment": 0.91234}]},
           {"index": 1, "coords": {"alpha": 0.0}, "metrics": {}}]  # no samples: not offered
    picked = figures.sample_points(pts)
    assert [p["index"] for p in picked] == [0, 2]
    texts = _texts(run_page.sample_table(picked[0]))
    from basin.figures import metric_label

    # the score's header is the registry's label ("sentiment (expected positive score)")
    assert texts == ["prompt", "generated text", metric_label("sentiment"), "Hello", "world", "0.9123"]


def test_the_summary_says_no_barrier_and_never_minus_zero(run_page):
    info = {"spec": {"metrics": ["accuracy", "loss"]},
            "summary": {"barrier": {"accuracy": {"value": -0.0, "alpha": 0.0, "start": 0.0, "end": 1.0},
                                    "loss": {"value": 0.25, "alpha": 0.5, "start": 0.0, "end": 1.0}}}}
    pts = [{"index": 0, "coords": {"alpha": 0.0}, "metrics": {"accuracy": -0.0, "loss": 1.0}}]
    rows = dict(run_page.summary_rows(info, pts))
    # without an interval (a run stored before every 1D run had one, a generation metric) the
    # words describe these points and conclude nothing
    assert rows["accuracy"] == "no barrier (on these points only: no interval, so no verdict)"
    assert rows["loss"] == "barrier 0.25 nats at α = 0.50 (on these points only: no interval, so no verdict)"
    assert "-0" not in rows["accuracy min / max"]


def _calibrated(value, ci, verdict, **more):
    return {"value": value, "alpha": 0.5, "ci": ci, "ci_method": "max-t band", "ci_level": 0.95,
            "ci_examples": 256, "tolerance": 0.02, "verdict": verdict, **more}


def test_the_summary_gives_the_barriers_interval_and_its_verdict_in_words(run_page):
    info = {"spec": {"metrics": ["loss", "accuracy"]},
            "summary": {"barrier": {"loss": _calibrated(0.004, [0.0, 0.011], "connected"),
                                    "accuracy": _calibrated(0.2, [0.1, 0.3], "not connected")}}}
    pts = [{"index": 0, "coords": {"alpha": 0.0}, "metrics": {"loss": 1.0, "accuracy": 0.9}}]
    rows = dict(run_page.summary_rows(info, pts))
    assert "[0, 0.011]" in rows["loss"] and rows["loss"].endswith(
        "— linearly connected: the barrier is below 0.02 nats at the 95 % level")
    assert "[10, 30]" in rows["accuracy"] and rows["accuracy"].endswith(
        "— not linearly connected: the barrier is above 0 at the 95 % level")
    info["summary"]["barrier"]["loss"] = _calibrated(0.01, [0.0, 0.05], "inconclusive", examples_to_decide=2100)
    assert dict(run_page.summary_rows(info, pts))["loss"].endswith(
        "— inconclusive whether linearly connected: the barrier may be 0 or above 0.02 nats (95 %); about 2,100 examples would decide it "
        "(now 256)")
    # an interval stored by the old percentile bootstrap of the maximum: no verdict from it
    info["summary"]["barrier"]["loss"] = {"value": 0.004, "alpha": 0.5, "ci": [0.001, 0.011],
                                          "ci_method": "paired bootstrap over examples"}
    row = dict(run_page.summary_rows(info, pts))["loss"]
    assert "no verdict" in row and "connected" not in row


def test_a_generation_runs_summary_leads_with_the_sentiment_trend(run_page):
    from basin.analysis.trend import trend

    per = [[0.1, 0.2, 0.15, 0.1, 0.2], [0.5, 0.6, 0.55, 0.5, 0.6], [0.8, 0.9, 0.85, 0.8, 0.9]]
    info = {"spec": {"metrics": ["sentiment", "sample_perplexity"], "task": "generation"},
            "summary": {"trend": {"sentiment": trend([0.0, 0.5, 1.0], per)},
                        "generation": {"reference": "smollm2-135m"},
                        "barrier": {"sample_perplexity": {"value": 5.61, "alpha": 0.75}}}}
    pts = [{"index": 0, "coords": {"alpha": 0.0}, "metrics": {"sentiment": 0.15, "sample_perplexity": 35.0}}]
    rows = run_page.summary_rows(info, pts)
    assert rows[0][0] == "sentiment trend" and rows[0][1].startswith("sentiment rises from 0.15 (α = 0) to 0.85")
    assert rows[1] == ("perplexity reference LM", "smollm2-135m")
    assert [k for k, _ in rows].index("perplexity of samples") > 1  # its label, not the id (issue 28)


def test_a_curve_runs_summary_says_connected_along_this_curve_not_linearly(run_page):
    info = {"spec": {"metrics": ["loss"], "path": {"type": "bezier"}},
            "summary": {"barrier": {"loss": _calibrated(0.004, [0.0, 0.011], "connected")}}}
    pts = [{"index": 0, "coords": {"alpha": 0.0}, "metrics": {"loss": 1.0}}]
    row = dict(run_page.summary_rows(info, pts))["loss"]
    assert row.endswith("— connected along this curve: the barrier is below 0.02 nats at the 95 % level")
    assert "linearly" not in row


def test_the_distance_card_shows_a_finished_1d_runs_per_layer_distances(run_page):
    summary = {"distance": {"l2": 2.0, "cosine": 0.9, "per_layer": [
        {"name": "embeddings", "stack": None, "l2": 1.0, "scaled": 0.1, "cosine": 0.95, "numel": 100},
        {"name": "layer 0", "stack": "h", "l2": 1.5, "scaled": 0.2, "cosine": 0.9, "numel": 50}]}}
    card = run_page._distance_card({"summary": summary})
    graph = card[0].children[1].children
    assert [list(t.x) for t in graph.figure.data] == [["embeddings", "layer 0"]] * 2
    assert list(graph.figure.data[0].y) == [0.1, 0.2]
    assert run_page._distance_card({"summary": None}) == [] == run_page._distance_card({})


def test_no_server_callback_of_the_run_page_takes_the_point_store(run_page):
    """The browser's ``run-points`` store (every point so far) is never uploaded: only the
    clientside poll reads and writes it; the rebuild and the sample viewer ask the API."""
    from dash._callback import GLOBAL_CALLBACK_MAP

    server = [cb for cb in GLOBAL_CALLBACK_MAP.values() if cb.get("callback") is not None]
    assert server  # the page's rebuild, samples and forgetting callbacks are registered
    for cb in server:
        ids = [d.get("id") for d in [*cb.get("inputs", []), *cb.get("state", [])]]
        assert "run-points" not in ids, cb
