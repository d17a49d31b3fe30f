"""Generation benchmark: the engine's samples along a path vs a naive loop, identical texts required.

Workload: two Llama-architecture LMs (4 layers, hidden 256, the MiniLM vocabulary) trained
60 steps on tweets from one seeded init with two data orders (so their next-token
distributions are peaked like a real LM's, not flat like random weights), the
first ``prompts`` neutral tweets cut to 8 tokens as prompts, k samples each, at most
``tokens`` new tokens, top-p 0.9, at α ∈ {0, 0.5, 1}.

``engine``  :class:`basin.engine.Landscape` (``task: generation``; metrics that need no scorer):
            one live model mixed in place, rows batched with left padding and a KV cache.
``naive``   research-code style: per α a model rebuilt from the mixed state dict, then
            ``generate`` per prompt and sample, unbatched, with the same per-row sampler and
            seeds (:class:`basin.evaluate.generation.RowSampler`, :func:`basin.generation.row_seed`).

Both must produce the same texts for every (α, prompt, sample); tokens per second are
new tokens over the seconds spent sampling (the engine's ``Landscape.open`` excluded, the
naive loop's rebuilds included: that is the work it does per α).
"""

from __future__ import annotations

import csv
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("bench.generation")

ALPHAS = (0.0, 0.5, 1.0)
VERSION = 2  # of the workload: bumped when the models or prompts change


def build(root: Path, *, prompts: int) -> dict[str, Path]:
    """Two seeded LMs and a prompts CSV (cached under ``root``)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from basin.demo import is_garbled, load_tweets, minilm_path

    marker = root / "ready.json"
    out = {"a": root / "lm-a", "b": root / "lm-b", "prompts": root / "prompts.csv"}
    if marker.is_file() and json.loads(marker.read_text()) == {"prompts": prompts, "version": VERSION}:
        return out
    tok = AutoTokenizer.from_pretrained(minilm_path())
    tok.eos_token = tok.sep_token  # BERT's vocabulary: [SEP] ends a text
    tok.bos_token = tok.cls_token
    tweets = [t for t, _ in load_tweets(labels=("negative", "positive")) if not is_garbled(t)]
    for name, seed in (("a", 1), ("b", 2)):
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                          num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                          pad_token_id=tok.pad_token_id, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id)
        model = LlamaForCausalLM(cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
        g = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(60):
            batch = [tweets[i] for i in torch.randint(len(tweets), (16,), generator=g).tolist()]
            enc = tok(batch, padding=True, truncation=True, max_length=48, return_tensors="pt")
            enc.pop("token_type_ids", None)
            loss = model(**enc, labels=enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval().save_pretrained(out[name])
        tok.save_pretrained(out[name])
    neutral = [t for t, _ in load_tweets(labels=("neutral",)) if not is_garbled(t)][:prompts]
    with open(out["prompts"], "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        w.writerows([t] for t in neutral)
    marker.write_text(json.dumps({"prompts": prompts, "version": VERSION}))
    return out


def run(root: Path, *, prompts: int = 16, samples: int = 4, tokens: int = 20, reps: int = 3,
        device: str = "cpu") -> dict[str, Any]:
    from safetensors.torch import load_file
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoTokenizer,
        GenerationConfig,
        LogitsProcessorList,
    )

    from basin.engine import Landscape
    from basin.evaluate.generation import RowSampler
    from basin.generation import row_seed
    from basin.resolve import FileResolver
    from basin.spec import parse_spec

    w = build(root, prompts=prompts)
    spec = parse_spec({
        "path": {"type": "linear", "a": str(w["a"]), "b": str(w["b"]), "points": len(ALPHAS)},
        "dataset": str(w["prompts"]), "task": "generation", "metrics": ["length", "distinct_2"],
        "max_examples": prompts, "batch_size": prompts * samples, "device": device, "dtype": "float32",
        "generation": {"prompt_tokens": 8, "samples_per_prompt": samples, "max_new_tokens": tokens,
                       "top_p": 0.9, "keep_samples": prompts * samples},
    })
    tok = AutoTokenizer.from_pretrained(w["a"])
    cfg = AutoConfig.from_pretrained(w["a"])
    sd_a, sd_b = load_file(w["a"] / "model.safetensors"), load_file(w["b"] / "model.safetensors")
    count: dict[str, int] = {}

    def engine() -> tuple[float, dict]:
        with Landscape.open(spec, FileResolver()) as land:
            t = time.perf_counter()
            texts, n = {}, 0.0
            for a in ALPHAS:
                got = land.measure({"alpha": a})
                n += got["metrics"]["length"] * prompts * samples
                for r, s in enumerate(got["samples"]):
                    texts[(a, r % prompts, r // prompts)] = s["text"]  # kept in (sample, prompt) order
            dt = time.perf_counter() - t
        count["engine"] = round(n)
        return dt, texts

    def naive() -> tuple[float, dict]:
        ids = [s[:8] for s in tok([r["text"] for r in csv.DictReader(open(w["prompts"]))][:prompts])["input_ids"]]
        gcfg = GenerationConfig(do_sample=False, max_new_tokens=tokens, min_new_tokens=0, pad_token_id=tok.pad_token_id,
                                eos_token_id=tok.sep_token_id)
        t = time.perf_counter()
        texts, n = {}, 0
        for a in ALPHAS:
            model = AutoModelForCausalLM.from_config(cfg)
            model.load_state_dict({k: (1 - a) * sd_a[k] + a * sd_b[k] for k in sd_a}, strict=False)
            model.to(device).eval()
            with torch.inference_mode():
                for p, prompt in enumerate(ids):
                    for j in range(samples):
                        g = torch.Generator().manual_seed(row_seed(0, {"alpha": a}, p, j))
                        x = torch.tensor([prompt], device=device)
                        out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=gcfg,
                                             logits_processor=LogitsProcessorList([RowSampler([g], top_p=0.9,
                                                                                              temperature=1.0)]))
                        new = out[0, len(prompt):].tolist()
                        new = new[: new.index(tok.sep_token_id)] if tok.sep_token_id in new else new
                        n += len(new)
                        texts[(a, p, j)] = tok.decode(new, skip_special_tokens=True)
        count["naive"] = n
        return time.perf_counter() - t, texts

    times: dict[str, list[float]] = {"engine_s": [], "naive_s": []}
    texts: dict[str, dict] = {}
    for rep in range(reps):
        for name, fn in (("engine", engine), ("naive", naive)):
            t, texts[name] = fn()
            times[f"{name}_s"].append(t)
        logger.info("generation rep %d/%d: %s", rep + 1, reps, {k: round(v[-1], 3) for k, v in times.items()})
    same = sum(texts["engine"][k] == texts["naive"].get(k) for k in texts["engine"])
    new_tokens = count["naive"]
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "workload": {"model": "Llama 4 layers, hidden 256, MiniLM vocabulary, 60 steps on tweets",
                     "params": sum(v.numel() for v in sd_a.values()), "alphas": list(ALPHAS), "prompts": prompts,
                     "samples_per_prompt": samples, "new_tokens": tokens, "top_p": 0.9},
        "reps": reps,
        **{k: round(v, 3) for k, v in med.items()},
        "engine_tokens_per_s": round(new_tokens / med["engine_s"], 1),
        "naive_tokens_per_s": round(new_tokens / med["naive_s"], 1),
        "naive_over_engine": round(med["naive_s"] / med["engine_s"], 2),
        "identical_texts": f"{same}/{len(texts['engine'])}",
        "new_tokens_generated": {"engine": count["engine"], "naive": count["naive"]},
        "ok": same == len(texts["engine"]) == len(texts["naive"]) and count["engine"] == count["naive"],
    }
