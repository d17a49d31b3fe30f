"""The new-run form keeps no copy of the spec: the tasks it offers, what each supports, and the
fields' defaults and bounds all come from ``GET /api/meta`` (the task registry and the run
spec's JSON schema), so a change in the core reaches the form with no edit to it."""

from __future__ import annotations

import copy

import pytest

from basin.meta import meta
from basin.spec import GenerationSpec, RunSpec, parse_spec

META = meta()


@pytest.fixture(scope="module", autouse=True)
def _pages():
    """The page modules register with Dash, so the app is built before they are imported."""
    from frontend.app import create_dash_app

    create_dash_app()
    global nr
    from frontend.pages import new_run as nr


BASE = {"type": "linear", "ckpt1": "a", "ckpt2": "b", "points": 9, "dataset": "d"}


def test_inputs_take_the_spec_defaults_and_bounds_from_the_schema():
    f = RunSpec.model_fields["max_examples"]
    bounds = {m.__class__.__name__: m for m in f.metadata}
    assert nr.spec_field(META, "max_examples") == {
        "value": f.default,
        "min": bounds["Ge"].ge,
        "max": bounds["Le"].le,
    }
    g = GenerationSpec.model_fields
    assert (
        nr.spec_field(META, "samples_per_prompt", "generation")["value"]
        == g["samples_per_prompt"].default
    )
    assert nr.spec_field(META, "top_p", "generation")["max"] == 1
    assert "value" not in nr.spec_field(META, "prompt_tokens", "generation")  # optional: no default
    assert (
        nr.spec_field(META, "prompt_tokens", "generation")["min"] == 1
    )  # the non-null branch's bound


def test_a_changed_default_in_the_schema_reaches_the_spec_the_form_builds():
    changed = copy.deepcopy(META)
    changed["run_spec"]["properties"]["max_examples"]["default"] = 77
    assert nr.build_spec(BASE, meta=changed)["max_examples"] == 77
    assert nr.build_spec(BASE, meta=META)["max_examples"] == 512


def test_what_a_task_supports_comes_from_its_registry_entry():
    on = {**BASE, "task": "classification", "ensemble": True, "per_example": True}
    spec = parse_spec(nr.build_spec(on, meta=META))
    assert spec.ensemble and spec.per_example
    # the same form values against a server whose classification task supports neither
    narrow = copy.deepcopy(META)
    narrow["tasks"]["classification"].update(ensemble=False, per_example=False)
    built = nr.build_spec(on, meta=narrow)
    assert "ensemble" not in built and "per_example" not in built
    assert nr.task_supports(META, "seq2seq", "per_example") and not nr.task_supports(
        META, "seq2seq", "ensemble"
    )
    assert [nr.generation_of(META, t) for t in META["tasks"]] == [
        "never",
        "with_prompts",
        "never",
        "always",
    ]


def test_grid_inputs_take_the_path_types_defaults_and_bounds():
    from basin.paths import PATHS

    linear = PATHS["linear"].Spec.model_json_schema()["properties"]["points"]
    assert nr.path_field(META, "linear", "points") == {
        "value": linear["default"],
        "min": linear["minimum"],
        "max": linear["maximum"],
    }
    res = PATHS["plane"].Spec.model_json_schema()["properties"]["resolution"]
    nx = nr.path_field(META, "plane", "resolution", 0)
    assert nx == {
        "value": res["default"][0],
        "min": res["prefixItems"][0]["minimum"],
        "max": res["prefixItems"][0]["maximum"],
    }
    assert nr.path_field(META, "plane", "margin")["value"] == 0.2
