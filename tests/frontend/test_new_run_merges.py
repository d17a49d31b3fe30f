"""The new-run form builds merge specs from what the path types declare (``GET /api/meta``)."""

from __future__ import annotations

import json

import pytest

from basin.meta import meta
from basin.spec import parse_spec

META = json.loads(json.dumps(meta()))


@pytest.fixture(scope="module", autouse=True)
def _pages():
    """The page modules register with Dash, so the app is built before they are imported."""
    from frontend.app import create_dash_app

    create_dash_app()
    global build_spec, param_inputs, path_info
    from frontend.pages.new_run import build_spec, param_inputs, path_info


def test_dare_form_values_become_a_valid_spec_with_typed_parameters():
    v = {"type": "dare", "ckpt1": "init", "traj": ["s1", "s2"], "dataset": "d.csv", "points": 11,
         "lo": 0, "hi": 1.5,
         "params": {"density": "0.3", "seed": "7", "rescale": "l1", "ties": True, "weights": "1, 0.5",
                    "normalize": False}}
    spec = build_spec(v, [], META)
    assert spec["path"] == {"type": "dare", "base": "init", "models": ["s1", "s2"], "points": 11,
                            "range": [0.0, 1.5], "density": 0.3, "seed": 7, "rescale": "l1", "ties": True,
                            "weights": [1.0, 0.5], "normalize": False}
    parsed = parse_spec(spec)
    assert parsed.path.weights == [1.0, 0.5] and parsed.path.ties is True


def test_empty_parameters_keep_the_defaults_and_models_keep_the_order_picked():
    v = {"type": "ties", "ckpt1": "init", "traj": ["s2", "s1"], "dataset": "d.csv",
         "params": {"density": "", "weights": "  ", "normalize": True}}
    path = build_spec(v, [{"id": "s1", "tags": {"step": 1}}, {"id": "s2", "tags": {"step": 2}}], META)["path"]
    assert path["models"] == ["s2", "s1"] and "density" not in path and "weights" not in path
    assert parse_spec({"path": path, "dataset": "d.csv"}).path.density == 0.2


def test_a_bad_number_is_passed_on_for_the_api_to_name():
    v = {"type": "ties", "ckpt1": "init", "traj": ["s1"], "dataset": "d.csv", "params": {"density": "lots"}}
    assert build_spec(v, [], META)["path"]["density"] == "lots"


def test_each_declared_parameter_gets_one_input_and_slerp_none():
    rows = param_inputs(path_info(META, "dare"))
    ids = [c.id for row in rows for c in _walk(row) if isinstance(getattr(c, "id", None), dict)]
    assert [i["field"] for i in ids] == ["density", "seed", "rescale", "ties", "weights", "normalize"]
    assert param_inputs(path_info(META, "slerp")) == []
    assert build_spec({"type": "slerp", "ckpt1": "a", "ckpt2": "b", "dataset": "d"}, [], META)["path"] == {
        "type": "slerp", "a": "a", "b": "b", "points": 26, "range": [0.0, 1.0]}


def _walk(c):
    yield c
    kids = getattr(c, "children", None)
    for k in kids if isinstance(kids, list) else [kids] if kids is not None else []:
        if hasattr(k, "to_plotly_json"):
            yield from _walk(k)
