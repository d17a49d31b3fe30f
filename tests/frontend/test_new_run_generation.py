"""The new-run form builds generation and ensembling specs the engine accepts."""

from __future__ import annotations

import pytest

from basin.errors import InvalidSpec
from basin.meta import meta
from basin.spec import parse_spec

META = meta()


@pytest.fixture(scope="module", autouse=True)
def _pages():
    """The page modules register with Dash, so the app is built before they are imported."""
    from frontend.app import create_dash_app

    create_dash_app()
    global build_spec
    from frontend.pages.new_run import build_spec

BASE = {"type": "linear", "ckpt1": "neg", "ckpt2": "pos", "points": 9, "lo": -0.5, "hi": 1.5, "max_examples": 16}


def test_a_generation_run_from_the_form():
    spec = parse_spec(build_spec({**BASE, "task": "generation", "dataset": "prompts", "gen_scorer": "sc",
                                  "gen_k": "2", "gen_tokens": 12, "gen_top_p": "0.8", "gen_seed": 3},
                                 meta=META))
    # no reference LM picked and no θ0 on a line: the samples' perplexity is left out, not scored by an end
    assert spec.task == "generation" and spec.metrics == ["sentiment", "distinct_2"]
    g = spec.generation
    assert (g.scorer, g.samples_per_prompt, g.max_new_tokens, g.top_p, g.seed) == ("sc", 2, 12, 0.8, 3)
    assert g.reference is None and g.prompts is None  # the run's dataset
    with_ref = parse_spec(build_spec({**BASE, "task": "generation", "dataset": "prompts", "gen_scorer": "sc",
                                      "gen_reference": "init", "ensemble": True}, meta=META))
    assert with_ref.metrics == ["sentiment", "sample_perplexity", "distinct_2"] and with_ref.ensemble is True


def test_without_a_scorer_the_form_leaves_sentiment_out_instead_of_failing():
    spec = parse_spec(build_spec({**BASE, "task": "generation", "dataset": "p"}, meta=META))
    assert "sentiment" not in spec.metrics


def test_loss_and_generation_in_one_causal_lm_run_with_ensembling():
    spec = parse_spec(build_spec({**BASE, "task": "causal_lm", "dataset": "text", "gen_prompts": "prompts",
                                  "gen_scorer": "sc", "gen_reference": "init", "ensemble": True}, meta=META))
    assert spec.metrics == ["loss", "perplexity", "sentiment", "sample_perplexity", "distinct_2"]
    assert spec.generation.prompts == "prompts" and spec.ensemble is True
    # a causal_lm run without prompts has no generation block
    assert parse_spec(build_spec({**BASE, "task": "causal_lm", "dataset": "t"}, meta=META)).generation is None


def test_ensembling_is_dropped_for_planes_and_bad_numbers_reach_the_validator():
    plane = build_spec({"type": "plane", "ckpt1": "a", "ckpt2": "b", "ckpt3": "c", "dataset": "d",
                        "ensemble": True}, meta=META)
    assert "ensemble" not in plane
    with pytest.raises(InvalidSpec, match="top_p"):
        parse_spec(build_spec({**BASE, "task": "generation", "dataset": "p", "gen_top_p": "2"}, meta=META))


def test_the_per_example_checkbox_keeps_each_examples_outcome():
    spec = parse_spec(build_spec({**BASE, "task": "classification", "dataset": "d", "per_example": True},
                                 meta=META))
    assert spec.per_example is True
    # unticked, and for a task without per-example outcomes, the spec leaves it out (the default: off)
    assert "per_example" not in build_spec({**BASE, "task": "classification", "dataset": "d"}, meta=META)
    assert "per_example" not in build_spec({**BASE, "task": "generation", "dataset": "p", "per_example": True},
                                           meta=META)


def test_sentiment_ticked_without_a_scorer_is_refused_in_words():
    """Issue 28 item 4: a ticked "sentiment" with no scorer is not silently dropped."""
    with pytest.raises(InvalidSpec, match="metric 'sentiment' needs a scorer"):
        parse_spec(build_spec({**BASE, "task": "generation", "dataset": "p", "metrics": ["sentiment", "distinct_2"]},
                              meta=META))
