"""Overlays compare like with like (basin.compare): runs that score different examples, or score
them differently, are named as such, and runs of different tasks are not drawn together."""

from __future__ import annotations

from basin.compare import differences, like_for_like
from basin.spec import parse_spec


def _spec(**over) -> dict:
    base = {"path": {"type": "linear", "a": "ft_a", "b": "ft_b"}, "dataset": "eval.csv"}
    return parse_spec({**base, **over}).model_dump(mode="json")


def test_runs_on_other_examples_or_settings_are_named_with_their_values():
    linear = _spec()
    slerp = _spec(path={"type": "slerp", "a": "ft_a", "b": "ft_b"}, max_examples=128)
    refuse, msg = like_for_like([linear, slerp], ["linear", "slerp"])
    assert not refuse
    assert msg.startswith("Not like for like") and "max_examples (linear: 512, slerp: 128)" in msg
    # the path is what an overlay compares: two methods on the same evaluation agree
    assert like_for_like([linear, _spec(path={"type": "slerp", "a": "ft_a", "b": "ft_b"})]) == (
        False,
        "",
    )
    assert [f for f, _ in differences([linear, _spec(seed=1, max_length=64, dtype="float16")])] == [
        "seed",
        "max_length",
        "dtype",
    ]
    # different tasks are different quantities: refused, and said why
    refuse, msg = like_for_like(
        [linear, _spec(task="causal_lm", dataset="text.jsonl")], ["cls", "lm"]
    )
    assert (
        refuse
        and msg.startswith("Not drawn")
        and "task (cls: classification, lm: causal_lm)" in msg
    )


def test_generation_runs_differ_in_sampling_but_not_in_how_many_samples_are_kept():
    gen = {
        "path": {"type": "linear", "a": "a", "b": "b"},
        "dataset": "p.csv",
        "task": "generation",
        "generation": {"reference": "init"},
    }
    one = parse_spec(gen).model_dump(mode="json")
    kept = parse_spec({**gen, "generation": {"reference": "init", "keep_samples": 2}}).model_dump(
        mode="json"
    )
    hotter = parse_spec(
        {**gen, "generation": {"reference": "init", "temperature": 1.5}}
    ).model_dump(mode="json")
    assert like_for_like([one, kept]) == (False, "")
    assert (
        "generation temperature (run 1: temperature=1.0; run 2: temperature=1.5)"
        in like_for_like([one, hotter])[1]
    )
