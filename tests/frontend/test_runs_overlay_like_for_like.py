"""The runs page's overlay compares like with like (issue 23 part 9): a SLERP run on 128 examples
drawn over a linear run on 512 carries a note naming the setting and each run's value; runs of
different tasks are not drawn at all, and the page says why. The page's own callback, with the
API's answers (``/api/runs/<id>/export``) served from memory."""

from __future__ import annotations

import pytest

from basin.spec import parse_spec
from frontend.api import ApiResult


@pytest.fixture(scope="module")
def runs_page():
    from frontend.app import create_dash_app

    create_dash_app()  # registers the pages
    from frontend.pages import runs

    return runs


def _doc(path_type: str, losses: list[float], **over) -> dict:
    spec = parse_spec(
        {
            "path": {"type": path_type, "a": "ft_a", "b": "ft_b", "points": len(losses)},
            "dataset": "eval.csv",
            **over,
        }
    ).model_dump(mode="json")
    n = len(losses) - 1
    points = [
        {"index": k, "coords": {"alpha": k / n}, "metrics": {"loss": v}}
        for k, v in enumerate(losses)
    ]
    return {"spec": spec, "points": points, "summary": {}}


def _overlay(runs_page, monkeypatch, docs: dict[str, dict]):
    monkeypatch.setattr(
        runs_page.api, "get", lambda url, **_: ApiResult(200, docs[url.split("/")[3]])
    )
    listed = [{"id": i, "spec": d["spec"]} for i, d in docs.items()]
    fn = getattr(runs_page._overlay, "__wrapped__", runs_page._overlay)
    return fn(list(docs), "loss", {}, listed)


def _text(component) -> str:
    """Every string inside a Dash component tree."""
    if component is None:
        return ""
    if isinstance(component, str):
        return component
    kids = getattr(component, "children", None)
    if isinstance(kids, list):
        return " ".join(_text(k) for k in kids)
    return _text(kids)


def test_an_overlay_of_runs_on_other_examples_is_drawn_with_a_note_naming_them(
    runs_page, monkeypatch
):
    docs = {
        "run-linear": _doc("linear", [0.371, 0.52, 0.40], max_examples=512),
        "run-slerp": _doc("slerp", [0.433, 0.58, 0.45], max_examples=128),
    }
    fig, style, msg = _overlay(runs_page, monkeypatch, docs)
    assert style == {} and len([t for t in fig.data if t.meta == "curve"]) == 2
    note = _text(msg)
    assert note.startswith("Not like for like") and "max_examples (" in note
    assert "512" in note and "128" in note
    assert "not like for like" in fig.layout.title.text
    # the same evaluation, two methods: drawn without a note
    same = {
        "run-linear": _doc("linear", [0.371, 0.52, 0.40]),
        "run-slerp": _doc("slerp", [0.371, 0.50, 0.40]),
    }
    fig, style, msg = _overlay(runs_page, monkeypatch, same)
    assert style == {} and "Not like for like" not in _text(msg)
    assert "not like for like" not in (fig.layout.title.text or "")


def test_an_overlay_of_different_tasks_is_refused_and_says_why(runs_page, monkeypatch):
    docs = {
        "run-cls": _doc("linear", [0.37, 0.52, 0.40]),
        "run-lm": _doc("linear", [3.1, 3.6, 3.2], task="causal_lm", dataset="text.jsonl"),
    }
    fig, style, msg = _overlay(runs_page, monkeypatch, docs)
    assert style == {"display": "none"}  # nothing drawn
    note = _text(msg)
    assert note.startswith("Not drawn") and "task (" in note and "causal_lm" in note
