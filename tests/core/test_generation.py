"""Generation runs (sentiment along a path, 001 §4.1) and output ensembling (001 §4.4) on tiny real LMs.

A GPT-2-like and a Llama-like pair are tuned from one init towards negative and positive
words; the scorer is a tiny BERT classifier whose labels are named negative / positive.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from basin.engine import Landscape, run
from basin.errors import DatasetError, InvalidSpec
from basin.generation import distinct_n, positive_index
from basin.resolve import FileResolver
from basin.spec import parse_spec
from tests.factories import build_sentiment_pair, write_classification_dataset


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def pair(request, tmp_path_factory) -> dict[str, Path]:
    return build_sentiment_pair(tmp_path_factory.mktemp(f"gen-{request.param}"), kind=request.param)


def gen_spec(pair: dict[str, Path], **over) -> dict:
    gen = {"scorer": str(pair["scorer"]), "samples_per_prompt": 3, "max_new_tokens": 8, "keep_samples": 256,
           "reference": str(pair["init"])}
    gen.update(over.pop("generation", {}))
    return {"path": {"type": "linear", "a": str(pair["neg"]), "b": str(pair["pos"]), "points": 5,
                     "range": [-0.5, 1.5]},
            "dataset": str(pair["prompts"]), "task": "generation", "batch_size": 4, "generation": gen, **over}


def texts(land: Landscape, alpha: float) -> list[tuple[str, str]]:
    return [(s["prompt"], s["text"]) for s in land.measure({"alpha": alpha})["samples"]]


def test_samples_do_not_depend_on_batch_size_or_point_order(pair):
    alphas = [0.0, 0.5, 1.0]
    with Landscape.open(parse_spec(gen_spec(pair, batch_size=1)), FileResolver()) as one:
        by_one = {a: texts(one, a) for a in alphas}
    with Landscape.open(parse_spec(gen_spec(pair, batch_size=7)), FileResolver()) as seven:
        by_seven = {a: texts(seven, a) for a in reversed(alphas)}
        again = texts(seven, 0.5)
    assert by_one == by_seven
    assert again == by_seven[0.5]  # the same point evaluated twice samples the same texts
    assert len(by_one[0.5]) == 6 * 3  # every row kept (keep_samples ≥ k × prompts)
    assert by_one[0.0] != by_one[1.0]  # and the texts do move along the path
    with Landscape.open(parse_spec(gen_spec(pair, generation={"seed": 1})), FileResolver()) as other:
        assert texts(other, 0.5) != by_one[0.5]  # the seed is the sampling's, not a constant


def test_sentiment_rises_from_the_negative_to_the_positive_model(pair):
    doc = run(parse_spec(gen_spec(pair)), FileResolver(), progress=False)
    s = {p["coords"]["alpha"]: p["metrics"]["sentiment"] for p in doc["points"]}
    assert s[0.0] < s[0.5] < s[1.0]
    assert s[1.0] - s[0.0] > 0.3
    # the descriptive metrics get no barrier; the perplexity of the samples does
    assert "sentiment" not in doc["summary"]["barrier"] and "sample_perplexity" in doc["summary"]["barrier"]


def test_every_generation_metric_matches_a_hand_computation(pair):
    spec = parse_spec(gen_spec(pair, generation={"samples_per_prompt": 2},
                               metrics=["sentiment", "sample_perplexity", "distinct_1", "distinct_2", "distinct_3",
                                        "length"]))
    with Landscape.open(spec, FileResolver()) as land:
        got = land.measure({"alpha": 0.5})
    samples, m = got["samples"], got["metrics"]
    assert len(samples) == 6 * 2
    tok = AutoTokenizer.from_pretrained(pair["neg"])
    conts = [tok(s["text"])["input_ids"] for s in samples]  # word-level: decode/encode round-trips
    assert m["length"] == pytest.approx(sum(map(len, conts)) / len(conts))
    for n in (1, 2, 3):
        # per prompt over its samples, then the mean over prompts (DExperts / 001)
        by_prompt_words: dict[str, list[list[str]]] = {}
        for smp in samples:
            by_prompt_words.setdefault(smp["prompt"], []).append(smp["text"].lower().split())
        ratios = []
        for ws in by_prompt_words.values():
            grams = [tuple(w[i:i + n]) for w in ws for i in range(len(w) - n + 1)]
            if grams:
                ratios.append(len(set(grams)) / len(grams))
        assert m[f"distinct_{n}"] == pytest.approx(sum(ratios) / len(ratios))
    # sentiment: the scorer's mean P(positive) over the continuations
    stok = AutoTokenizer.from_pretrained(pair["scorer"])
    scorer = AutoModelForSequenceClassification.from_pretrained(pair["scorer"]).eval()
    with torch.no_grad():
        probs = [torch.softmax(scorer(**stok(s["text"], return_tensors="pt")).logits, -1)[0, 1].item()
                 for s in samples]
    assert [s["sentiment"] for s in samples] == pytest.approx(probs, abs=1e-5)
    assert m["sentiment"] == pytest.approx(sum(probs) / len(probs), abs=1e-5)
    # perplexity of the continuations given their prompts under the reference (the common init)
    ref = AutoModelForCausalLM.from_pretrained(pair["init"]).eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for s, c in zip(samples, conts, strict=True):
            if not c:
                continue
            p = tok(s["prompt"])["input_ids"]
            ids = torch.tensor([p + c])
            logp = F.log_softmax(ref(ids).logits[0, :-1].double(), -1)
            nll -= sum(logp[len(p) - 1 + i, t].item() for i, t in enumerate(c))
            count += len(c)
    assert m["sample_perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-4)
    # 95 % intervals with the prompt as the unit (its samples are not independent): mean ± 1.96·s/√n
    # over the prompts' mean sentiment / length; perplexity from the prompts' summed NLL and tokens
    iv = got["intervals"]
    assert set(iv) == {"sentiment", "length", "sample_perplexity"}  # distinct-n is no mean: none
    for metric, per_sample in (("sentiment", probs), ("length", list(map(len, conts)))):
        by_prompt: dict[str, list[float]] = {}
        for smp, v in zip(samples, per_sample, strict=True):
            by_prompt.setdefault(smp["prompt"], []).append(v)
        means = torch.tensor([sum(v) / len(v) for v in by_prompt.values()], dtype=torch.float64)
        half = 1.959964 * means.std().item() / math.sqrt(len(means))
        assert iv[metric] == pytest.approx([m[metric] - half, m[metric] + half], abs=1e-4)
    lo, hi = iv["sample_perplexity"]
    assert lo < m["sample_perplexity"] < hi


def test_distinct_n_and_positive_label_rules():
    assert distinct_n(["a b a b", "A B"], 1) == pytest.approx(2 / 6)
    assert distinct_n(["a b a b", "a b"], 2) == pytest.approx(2 / 4)
    assert distinct_n(["a"], 2) == 0.0
    assert positive_index({"id2label": {"0": "NEGATIVE", "1": "POSITIVE"}}, None) == 1
    assert positive_index({"id2label": {0: "neg", 1: "pos", 2: "neutral"}}, None) == 1
    assert positive_index({"id2label": {0: "joy", 1: "anger"}}, "Joy") == 0
    with pytest.raises(InvalidSpec, match="'LABEL_0', 'LABEL_1', none named 'positive'.*positive_label"):
        positive_index({}, None)  # transformers leaves the unnamed default labels out of config.json
    with pytest.raises(InvalidSpec, match="'happy' is not one of"):
        positive_index({"id2label": {0: "negative", 1: "positive"}}, "happy")


def test_bad_generation_specs_get_one_clear_error(pair, tmp_path):
    base = {"path": {"type": "linear", "a": "a", "b": "b"}, "dataset": "d"}
    with pytest.raises(InvalidSpec, match="'sentiment' needs a scorer"):
        parse_spec({**base, "task": "generation", "metrics": ["sentiment"]})
    with pytest.raises(InvalidSpec, match="need task generation"):
        parse_spec({**base, "task": "classification", "generation": {}})
    with pytest.raises(InvalidSpec, match="path between two checkpoints"):
        parse_spec({"path": {"type": "plane", "a": "a", "b": "b", "c": "c"}, "dataset": "d", "ensemble": True})
    # a scorer whose labels nobody named: refused before any weights are read
    unnamed = tmp_path / "unnamed"
    AutoModelForSequenceClassification.from_pretrained(pair["scorer"], id2label={0: "LABEL_0", 1: "LABEL_1"},
                                                       label2id={"LABEL_0": 0, "LABEL_1": 1}).save_pretrained(unnamed)
    AutoTokenizer.from_pretrained(pair["scorer"]).save_pretrained(unnamed)
    with pytest.raises(InvalidSpec, match="set generation.positive_label"):
        Landscape.open(parse_spec(gen_spec(pair, generation={"scorer": str(unnamed)})), FileResolver())
    # a prompts file without prompts
    no_prompts = write_classification_dataset(tmp_path / "labelled.csv", n=4)
    with pytest.raises(DatasetError, match="no 'prompt' column.*generation.prompt_tokens"):
        Landscape.open(parse_spec(gen_spec(pair, dataset=str(no_prompts))), FileResolver())
    # ... unless its text is cut to a prompt
    spec = gen_spec(pair, dataset=str(no_prompts), generation={"prompt_tokens": 2, "samples_per_prompt": 1})
    with Landscape.open(parse_spec(spec), FileResolver()) as land:
        got = land.measure({"alpha": 0.0})["samples"]
    assert [len(s["prompt"].split()) for s in got] == [2] * 4


def test_loss_and_generation_metrics_in_one_causal_lm_run(pair):
    spec = parse_spec({"path": {"type": "linear", "a": str(pair["neg"]), "b": str(pair["pos"]), "points": 3},
                       "dataset": str(pair["text"]), "task": "causal_lm", "batch_size": 4,
                       "generation": {"prompts": str(pair["prompts"]), "scorer": str(pair["scorer"]),
                                      "reference": str(pair["init"]),
                                      "samples_per_prompt": 1, "max_new_tokens": 5, "keep_samples": 2}})
    assert spec.metrics == ["loss", "perplexity", "sentiment", "sample_perplexity", "distinct_2"]
    doc = run(spec, FileResolver(), progress=False)
    for p in doc["points"]:
        assert set(p["metrics"]) == set(spec.metrics) and len(p["samples"]) == 2
    plain = run(parse_spec({**spec.model_dump(mode="json"), "generation": None, "metrics": ["loss"]}),
                FileResolver(), progress=False)
    assert [p["metrics"]["loss"] for p in doc["points"]] == [p["metrics"]["loss"] for p in plain["points"]]


# ---- output ensembling ----------------------------------------------------------------------------


def _lm_nll(model_dir: Path, texts: list[str]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    logps, targets = [], []
    with torch.no_grad():
        for t in texts:
            ids = tok(t, return_tensors="pt")["input_ids"]
            logps.append(F.log_softmax(model(ids).logits[0, :-1].double(), -1))
            targets.append(ids[0, 1:])
    return logps, targets


def _lm_logits(model_dir: Path, texts: list[str]) -> list[torch.Tensor]:
    """The raw next-token logits (not normalised) of each text."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return [model(tok(t, return_tensors="pt")["input_ids"]).logits[0, :-1].double() for t in texts]


def test_lm_output_ensemble_is_the_renormalised_mix_of_log_probabilities(pair):
    spec = parse_spec({"path": {"type": "linear", "a": str(pair["neg"]), "b": str(pair["pos"]), "points": 5,
                                "range": [-0.5, 1.5]},
                       "dataset": str(pair["text"]), "task": "causal_lm", "batch_size": 3, "ensemble": True})
    doc = run(spec, FileResolver(), progress=False)
    by = {p["coords"]["alpha"]: p for p in doc["points"]}
    for a in (0.0, 1.0):  # at the endpoints the ensemble IS the weight path, bit for bit
        assert by[a]["ensemble"] == by[a]["metrics"]
    texts = [json.loads(line)["text"] for line in pair["text"].read_text().splitlines()]
    la, tgt = _lm_nll(pair["neg"], texts)
    lb, _ = _lm_nll(pair["pos"], texts)
    za, zb = _lm_logits(pair["neg"], texts), _lm_logits(pair["pos"], texts)
    for a in (-0.5, 0.5, 1.5):
        nll = sum(-F.log_softmax((1 - a) * x + a * y, -1).gather(1, t[:, None]).sum().item()
                  for x, y, t in zip(la, lb, tgt, strict=True))
        n = sum(len(t) for t in tgt)
        assert by[a]["ensemble"]["loss"] == pytest.approx(nll / n, rel=1e-5)
        assert by[a]["ensemble"]["perplexity"] == pytest.approx(math.exp(nll / n), rel=1e-5)
        # DExperts' form, mixing raw logits, gives the same distribution after renormalisation
        # (log p = z - logsumexp(z): one constant per position), as docs/engine.md says
        raw = sum(-F.log_softmax((1 - a) * x + a * y, -1).gather(1, t[:, None]).sum().item()
                  for x, y, t in zip(za, zb, tgt, strict=True))
        assert by[a]["ensemble"]["loss"] == pytest.approx(raw / n, rel=1e-5)
    # ensembling is not weight interpolation: away from the endpoints the two curves differ
    assert max(abs(by[a]["ensemble"]["loss"] - by[a]["metrics"]["loss"]) for a in (-0.5, 0.5, 1.5)) > 1e-3


def test_classifier_output_ensemble_mixes_logits(tmp_path):
    from tests.factories import build_classifier_family

    fam = build_classifier_family(tmp_path, steps=12)
    spec = parse_spec({"path": {"type": "linear", "a": str(fam["ft_a"]), "b": str(fam["ft_b"]), "points": 3},
                       "dataset": str(fam["data"]), "ensemble": True, "metrics": ["loss", "accuracy", "f1"]})
    doc = run(spec, FileResolver(), progress=False)
    by = {p["coords"]["alpha"]: p for p in doc["points"]}
    assert by[0.0]["ensemble"] == by[0.0]["metrics"] and by[1.0]["ensemble"] == by[1.0]["metrics"]
    tok = AutoTokenizer.from_pretrained(fam["ft_a"])
    rows = list(csv.DictReader(fam["data"].open()))
    enc = tok([r["text"] for r in rows], padding=True, return_tensors="pt")
    y = torch.tensor([int(r["label"]) for r in rows])
    with torch.no_grad():
        za = AutoModelForSequenceClassification.from_pretrained(fam["ft_a"]).eval()(**enc).logits
        zb = AutoModelForSequenceClassification.from_pretrained(fam["ft_b"]).eval()(**enc).logits
    z = 0.5 * za + 0.5 * zb
    assert by[0.5]["ensemble"]["loss"] == pytest.approx(F.cross_entropy(z, y).item(), rel=1e-5)
    assert by[0.5]["ensemble"]["accuracy"] == pytest.approx((z.argmax(-1) == y).double().mean().item())
