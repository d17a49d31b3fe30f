"""Generation metrics as 001 / DExperts define them (issue 23 parts 4-7), on tiny real models.

The reference LM of the samples' perplexity is not an end of the path; distinct-n is per
prompt; a three-class scorer gives the expected positive score; output ensembling generates
text from the mixed next-token log-probabilities; the summary leads with the sentiment trend.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from basin.engine import Landscape, run
from basin.errors import InvalidSpec
from basin.evaluate.generation import RowSampler
from basin.generation import distinct_n, distinct_n_per_prompt, label_weights, row_seed
from basin.report import summarize
from basin.resolve import FileResolver
from basin.spec import parse_spec
from tests.factories import (
    build_sentiment_pair,
    finetune_classifier,
    init_classifier,
    make_tokenizer,
    save,
)


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> dict[str, Path]:
    return build_sentiment_pair(tmp_path_factory.mktemp("gen-papers"), kind="gpt2")


def spec_of(pair: dict[str, Path], *, points: int = 3, **gen) -> dict:
    g = {
        "scorer": str(pair["scorer"]),
        "samples_per_prompt": 2,
        "max_new_tokens": 6,
        "keep_samples": 256,
        "reference": str(pair["init"]),
        **gen,
    }
    return {
        "path": {"type": "linear", "a": str(pair["neg"]), "b": str(pair["pos"]), "points": points},
        "dataset": str(pair["prompts"]),
        "task": "generation",
        "batch_size": 4,
        "generation": g,
    }


def test_sample_perplexity_is_never_scored_by_an_end_of_the_path(pair):
    # a linear path between two fine-tunes has no θ0: the reference must be named
    spec = spec_of(pair)
    del spec["generation"]["reference"]
    with pytest.raises(
        InvalidSpec, match="sample_perplexity.*needs a reference LM.*generation.reference"
    ):
        parse_spec({**spec, "metrics": ["sentiment", "sample_perplexity"]})
    assert "sample_perplexity" not in parse_spec(spec).metrics  # and the defaults leave it out
    # a path with θ0 (task arithmetic's base) uses it without being told
    ta = parse_spec(
        {
            "path": {
                "type": "task_arithmetic",
                "base": str(pair["init"]),
                "models": [str(pair["neg"]), str(pair["pos"])],
            },
            "dataset": str(pair["prompts"]),
            "task": "generation",
        }
    )
    assert ta.reference_lm() == str(pair["init"]) and "sample_perplexity" in ta.metrics
    # named: the summary says which LM scored the samples, and the numbers are that LM's
    doc = run(parse_spec(spec_of(pair)), FileResolver(), progress=False)
    assert doc["summary"]["generation"]["reference"] == str(pair["init"])
    assert f"Sample perplexity under {pair['init']}" in summarize(doc)
    tok = AutoTokenizer.from_pretrained(pair["neg"])
    ref = AutoModelForCausalLM.from_pretrained(pair["init"]).eval()
    at0 = next(p for p in doc["points"] if p["coords"]["alpha"] == 0.0)
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in at0["samples"]:
            c, p = tok(s["text"])["input_ids"], tok(s["prompt"])["input_ids"]
            if c:
                logp = F.log_softmax(ref(torch.tensor([p + c])).logits[0, :-1].double(), -1)
                nll -= sum(logp[len(p) - 1 + i, t].item() for i, t in enumerate(c))
                count += len(c)
    assert at0["metrics"]["sample_perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)


def test_distinct_n_is_per_prompt_as_dexperts_defines_it():
    # prompt 1's two samples repeat each other; prompt 2's one sample does not
    groups = [["good film", "good film"], ["a bad film"]]
    assert distinct_n_per_prompt(groups, 1) == pytest.approx((2 / 4 + 3 / 3) / 2)
    assert distinct_n_per_prompt(groups, 2) == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert distinct_n([t for g in groups for t in g], 1) == pytest.approx(4 / 7)  # the pooled form
    assert distinct_n_per_prompt([["a"], []], 2) == 0.0


def test_a_three_class_scorer_gives_the_expected_positive_score(pair, tmp_path):
    three = init_classifier(
        0,
        num_labels=3,
        id2label={0: "negative", 1: "neutral", 2: "positive"},
        label2id={"negative": 0, "neutral": 1, "positive": 2},
    )
    finetune_classifier(three, seed=1, steps=4)
    scorer = save(three, tmp_path / "three", make_tokenizer("bert"))
    weights, named = label_weights({"id2label": {0: "negative", 1: "neutral", 2: "positive"}}, None)
    assert weights == [0.0, 0.5, 1.0] and named == {
        "negative": 0.0,
        "neutral": 0.5,
        "positive": 1.0,
    }
    with pytest.raises(InvalidSpec, match="label_scores names \\['joy'\\]"):
        label_weights({"id2label": {0: "negative", 1: "positive"}}, None, {"joy": 1.0})
    spec = parse_spec(spec_of(pair, scorer=str(scorer)))
    with Landscape.open(spec, FileResolver()) as land:
        got = land.measure({"alpha": 0.5})
        summary = land.summary([{"index": 1, "coords": {"alpha": 0.5}, **got}])
    stok = AutoTokenizer.from_pretrained(scorer)
    model = AutoModelForSequenceClassification.from_pretrained(scorer).eval()
    with torch.no_grad():
        probs = [
            torch.softmax(model(**stok(s["text"], return_tensors="pt")).logits.double(), -1)[0]
            for s in got["samples"]
        ]
    expected = [float(p[2] + 0.5 * p[1]) for p in probs]
    assert [s["sentiment"] for s in got["samples"]] == pytest.approx(expected, abs=1e-6)
    assert got["metrics"]["sentiment"] == pytest.approx(sum(expected) / len(expected), abs=1e-6)
    assert (
        abs(got["metrics"]["sentiment"] - sum(float(p[2]) for p in probs) / len(probs)) > 1e-3
    )  # not P(pos)
    assert summary["generation"]["label_scores"] == {
        "negative": 0.0,
        "neutral": 0.5,
        "positive": 1.0,
    }
    # P(positive) alone, when asked for
    spec = parse_spec(spec_of(pair, scorer=str(scorer), label_scores={"POSITIVE": 1.0}))
    with Landscape.open(spec, FileResolver()) as land:
        only = land.measure({"alpha": 0.5})
    assert only["metrics"]["sentiment"] == pytest.approx(
        sum(float(p[2]) for p in probs) / len(probs), abs=1e-6
    )


def _mixed_texts(pair: dict[str, Path], alpha: float, spec) -> list[list[int]]:
    """The ensemble's continuations by hand: one row at a time, full forward passes of both LMs, the
    renormalised mix of their log-probabilities, the run's row seeds."""
    tok = AutoTokenizer.from_pretrained(pair["neg"])
    ma = AutoModelForCausalLM.from_pretrained(pair["neg"]).eval()
    mb = AutoModelForCausalLM.from_pretrained(pair["pos"]).eval()
    gen = spec.generation
    prompts = [r.rstrip("\n") for r in pair["prompts"].read_text().splitlines()[1:]]
    out = []
    with torch.no_grad():
        for p, prompt in enumerate(prompts):
            for j in range(gen.samples_per_prompt):
                ids = tok(prompt)["input_ids"]
                g = torch.Generator().manual_seed(row_seed(gen.seed, {"alpha": alpha}, p, j))
                sampler = RowSampler([g], top_p=gen.top_p, temperature=gen.temperature)
                new: list[int] = []
                for _ in range(gen.max_new_tokens):
                    x = torch.tensor([ids + new])
                    la = F.log_softmax(ma(x).logits[0, -1].double(), -1)
                    lb = F.log_softmax(mb(x).logits[0, -1].double(), -1)
                    t = int(sampler(x, ((1 - alpha) * la + alpha * lb)[None]).argmax())
                    if t == tok.eos_token_id:
                        break
                    new.append(t)
                out.append(new)
    return out


def test_output_ensembling_generates_from_the_mixed_log_probabilities(pair):
    spec = parse_spec(
        {
            **spec_of(pair),
            "ensemble": True,
            "metrics": ["sentiment", "sample_perplexity", "distinct_1_pooled", "length"],
        }
    )
    doc = run(spec, FileResolver(), progress=False)
    by = {p["coords"]["alpha"]: p for p in doc["points"]}
    for a in (0.0, 1.0):  # at the endpoints the ensemble IS the weight path (same seeds, one model)
        assert by[a]["ensemble"] == by[a]["metrics"]
    conts = _mixed_texts(pair, 0.5, spec)
    tok = AutoTokenizer.from_pretrained(pair["neg"])
    texts = [tok.decode(c, skip_special_tokens=True) for c in conts]
    ens = by[0.5]["ensemble"]
    assert ens["length"] == pytest.approx(sum(map(len, conts)) / len(conts))
    assert ens["distinct_1_pooled"] == pytest.approx(distinct_n(texts, 1))
    stok = AutoTokenizer.from_pretrained(pair["scorer"])
    scorer = AutoModelForSequenceClassification.from_pretrained(pair["scorer"]).eval()
    with torch.no_grad():
        pos = [
            torch.softmax(scorer(**stok(t, return_tensors="pt")).logits, -1)[0, 1].item()
            for t in texts
        ]
    assert ens["sentiment"] == pytest.approx(sum(pos) / len(pos), abs=1e-5)
    assert ens != by[0.5]["metrics"]  # not weight interpolation: other texts
    # the ensemble's sentiment trend sits beside weight interpolation's in the summary
    trends = doc["summary"]["trend"]
    assert set(trends) == {"sentiment", "sentiment (output ensemble)"}
    assert trends["sentiment (output ensemble)"]["start"] == pytest.approx(trends["sentiment"]["start"])
    assert trends["sentiment (output ensemble)"]["end"] == pytest.approx(ens_end := by[1.0]["ensemble"]["sentiment"])
    assert ens_end == pytest.approx(trends["sentiment"]["end"])
    # the run page and the report draw the ensemble's curve dashed beside weight interpolation
    from basin.figures import line_figure

    for metric in ("sentiment", "sample_perplexity"):
        traces = {t.meta: t for t in line_figure(doc, metric).data}
        assert (
            traces["ensemble"].name == "output ensemble" and traces["ensemble"].line.dash == "dash"
        )
        assert list(traces["ensemble"].x) == [0.0, 0.5, 1.0]


def test_the_summary_leads_with_the_sentiment_trend(pair):
    doc = run(
        parse_spec(spec_of(pair, points=5, samples_per_prompt=3)), FileResolver(), progress=False
    )
    t = doc["summary"]["trend"]["sentiment"]
    by = {p["coords"]["alpha"]: p["metrics"]["sentiment"] for p in doc["points"]}
    assert t["start"] == pytest.approx(by[0.0], abs=1e-5) and t["end"] == pytest.approx(
        by[1.0], abs=1e-5
    )
    assert t["prompts"] == 6 and t["points"] == 5
    assert t["direction"] == "rises" and t["change_ci"][0] > 0
    text = summarize(doc)
    assert text.startswith("sentiment rises from"), text
    assert text.index("sentiment rises") < text.index("sample_perplexity")
