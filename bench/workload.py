"""The benchmark's workload: two fine-tuned seeds of a small BERT on real tweets.

A 4-layer BERT (hidden 128) is built from its config with the MiniLM tokenizer's
vocabulary, so inputs are real tweets at their real token lengths. θ0 is seeded;
two copies are fine-tuned a few AdamW steps on balanced positive/negative tweets
with data-order seeds 1 and 2, and saved as Hugging Face directories in a cache
folder together with a held-out evaluation CSV. Built once (~20 s) and reused.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from basin.demo import LABELS, balanced_split, load_tweets, minilm_path, write_csv

logger = logging.getLogger(__name__)

VERSION = 1


@dataclass(frozen=True)
class Workload:
    root: Path
    a: Path  # seed 1
    b: Path  # seed 2
    data: Path  # held-out tweets, text,label


def default_cache() -> Path:
    return Path(os.environ.get("BASIN_BENCH_CACHE", Path(tempfile.gettempdir()) / "basin-bench"))


def build(root: Path | None = None, *, n_eval: int = 256, steps: int = 30, batch_size: int = 32) -> Workload:
    """Build (or reuse) the two checkpoints and the evaluation CSV under ``root``."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    root = Path(root or default_cache()) / f"v{VERSION}-n{n_eval}-s{steps}"
    w = Workload(root, root / "bert-seed1", root / "bert-seed2", root / "tweets-eval.csv")
    stamp = root / "done.json"
    if stamp.is_file():
        return w
    root.mkdir(parents=True, exist_ok=True)
    ev, tr = balanced_split(load_tweets(), n_eval, steps * batch_size, seed=0)
    write_csv(w.data, ev)
    tok = AutoTokenizer.from_pretrained(minilm_path())
    cfg = BertConfig(
        vocab_size=tok.vocab_size, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
        intermediate_size=512, max_position_embeddings=512, num_labels=2,
        id2label=dict(enumerate(LABELS)), label2id={v: i for i, v in enumerate(LABELS)},
    )
    torch.manual_seed(0)
    init = BertForSequenceClassification(cfg).state_dict()
    y_all = torch.tensor([LABELS.index(y) for _, y in tr])
    for seed, out in ((1, w.a), (2, w.b)):
        model = BertForSequenceClassification(cfg)
        model.load_state_dict(init)
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(tr), generator=g).tolist()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model.train()
        for s in range(steps):
            idx = perm[s * batch_size : (s + 1) * batch_size]
            enc = tok([tr[i][0] for i in idx], truncation=True, max_length=128, padding=True,
                      return_tensors="pt")
            loss = model(**enc, labels=y_all[idx]).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
        logger.info("bench checkpoint %s: last train loss %.3f", out.name, loss.item())
    stamp.write_text(json.dumps({"version": VERSION, "n_eval": n_eval, "steps": steps}))
    return w
