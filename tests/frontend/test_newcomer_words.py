"""Words and defaults a new user reads (issue 28, items 6 and 7): the merge base defaults to
the step-0 checkpoint, the barrier speaks the path's own coordinate, a cosine near 1 keeps
the digits that tell it from 1, one point is "1 point"."""

from __future__ import annotations

from basin.analysis.barrier import barrier_sentence
from basin.figures import cosine_text
from frontend.components import plural
from frontend.defaults import default_base


def test_the_merge_base_defaults_to_the_step0_checkpoint():
    demo = [
        {"id": "s1", "name": "minilm-seed1", "tags": {"seed": 1, "step": 60}},
        {"id": "s2", "name": "minilm-seed2", "tags": {"seed": 2, "step": 60}},
        {"id": "i0", "name": "minilm-init", "tags": {"seed": None, "step": 0}},
    ]
    assert default_base(demo) == "i0"
    assert (
        default_base([{"id": "a", "name": "ft_a"}, {"id": "b", "name": "pretrained-bert"}]) == "b"
    )
    assert default_base([{"id": "a", "name": "ft_a"}]) == ""


def test_the_barrier_sentence_uses_the_axis_coordinate():
    entry = {"value": 0.42, "alpha": 0.4}
    assert "at λ = 0.40" in barrier_sentence(entry, "loss", path_type="ties")
    assert "at λ = 0.40" in barrier_sentence(entry, "loss", path_type="task_arithmetic")
    assert "at t = 0.40" in barrier_sentence(entry, "loss", path_type="slerp")
    assert "at α = 0.40" in barrier_sentence(entry, "loss", path_type="linear")


def test_a_cosine_near_one_is_not_rounded_to_one():
    assert cosine_text(0.999957) == "0.999957"
    assert cosine_text(0.81234) == "0.8123"
    assert cosine_text(1.0) == "1.0000"
    assert plural(1, "point") == "1 point" and plural(0, "point") == "0 points"


def test_titles_and_summaries_name_metrics_not_ids():
    from basin import figures

    assert figures.metric_name("sample_perplexity") == "perplexity of samples"
    assert figures.metric_name("distinct_2") == "distinct-2"
    doc = {
        "spec": {
            "task": "generation",
            "path": {"type": "linear", "a": "a", "b": "b", "points": 2},
            "metrics": ["distinct_2"],
        },
        "points": [
            {"index": i, "coords": {"alpha": float(i)}, "metrics": {"distinct_2": 0.5}}
            for i in range(2)
        ],
    }
    title = figures.line_figure(doc, "distinct_2").layout.title.text
    assert "distinct-2" in title and "distinct_2" not in title


def test_pickers_offer_what_fits_the_task_and_the_first_checkpoint():
    from frontend.defaults import fitting

    ckpts = [
        {
            "id": "b1",
            "architecture": "BertForSequenceClassification",
            "model_type": "bert",
            "num_parameters": 10,
        },
        {
            "id": "b2",
            "architecture": "BertForSequenceClassification",
            "model_type": "bert",
            "num_parameters": 10,
        },
        {
            "id": "bw",
            "architecture": "BertForSequenceClassification",
            "model_type": "bert",
            "num_parameters": 99,
        },
        {
            "id": "l1",
            "architecture": "LlamaForCausalLM",
            "model_type": "llama",
            "num_parameters": 10,
        },
        {"id": "x", "architecture": None, "model_type": None, "num_parameters": 5},
    ]
    ids = lambda ms: [m["id"] for m in ms]  # noqa: E731
    assert ids(fitting(ckpts, "classification")) == ["b1", "b2", "bw", "x"]
    assert ids(fitting(ckpts, "causal_lm")) == ["l1", "x"]
    # beside a BERT only BERTs (a resized head is left to Check and on_mismatch: hold)
    assert ids(fitting(ckpts, "classification", "b1")) == ["b1", "b2", "bw"]
    assert ids(fitting(ckpts, "causal_lm", "l1")) == ["l1"]
