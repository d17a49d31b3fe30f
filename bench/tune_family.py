"""``python -m bench.tune_family``: Qin et al. 2022 (000) on a MiniLM tune family — linear barriers
with their 95 % intervals and verdicts, within and across tuning methods, seeds and data orders.

Input: the folders ``basin tune`` wrote for ``examples/tune-minilm-000-{full,lora,prefix,order2,headshared}.yaml``
under ``--root`` (``ROOT/full``, ``ROOT/lora``, ``ROOT/prefix``, ``ROOT/order2``, ``ROOT/headshared``). Every path is
a ``linear`` run of :func:`basin.engine.run` (11 points) on the held-out tweets
(``examples/tweets-eval.csv``: 256 balanced tweets no member trained on); the summary's barrier
entry carries the calibrated interval and verdict (docs/verdict.md). Groups (``--only``):

- ``seeds``: the same method, seeds 1 and 2 (head, adapter init, dropout and data order all
  differ): full (plain weights), LoRA in merged and in adapter space, prefix (adapter space);
- ``methods``: the same seed (one θ0), full ↔ LoRA (merged space); full ↔ prefix and
  LoRA ↔ prefix have no common parameter space — their refusals are recorded;
- ``orders``: seed 1 with data order 1 vs 2 (same head, adapter init and dropout);
- ``head``: seed 1 vs a seed-2 member that kept seed 1's head
  (``examples/tune-minilm-000-headshared.yaml``, ``ROOT/headshared``);
- ``steps``: one member's trajectory, its first checkpoint (step 10) ↔ its final one.

Writes (merging with what is there) ``bench/results/tune_family.json``: per path the spec, the
curve, loss and accuracy barriers (value, α, interval, verdict, the sentence Basin prints);
per member its held-out metrics and training loss (first / last 20 steps' mean).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results" / "tune_family.json"
EVAL = Path(__file__).resolve().parent.parent / "examples" / "tweets-eval.csv"
PARTS = ("full", "lora", "prefix", "order2", "headshared")


def member(method: str, seed: int, *, order2: bool = False, ckpt: str = "final") -> str:
    """A member's checkpoint folder, relative to the family root."""
    if order2:
        return f"order2/minilm000o2-{method}-o2-s{seed}/{ckpt}"
    return f"{method}/minilm000-{method}-s{seed}/{ckpt}"


#: (key, group, a, b, space, what it varies)
PATHS: list[tuple[str, str, str, str, str, str]] = [
    (
        "full s1-s2",
        "seeds",
        member("full", 1),
        member("full", 2),
        "merged",
        "seed (head init, dropout, order)",
    ),
    (
        "lora s1-s2 merged",
        "seeds",
        member("lora", 1),
        member("lora", 2),
        "merged",
        "seed (head, LoRA init, dropout, order)",
    ),
    (
        "lora s1-s2 adapter",
        "seeds",
        member("lora", 1),
        member("lora", 2),
        "adapter",
        "seed (head, LoRA init, dropout, order)",
    ),
    (
        "prefix s1-s2",
        "seeds",
        member("prefix", 1),
        member("prefix", 2),
        "adapter",
        "seed (head, prefix init, dropout, order)",
    ),
    ("full-lora s1", "methods", member("full", 1), member("lora", 1), "merged", "method (one θ0)"),
    ("full-lora s2", "methods", member("full", 2), member("lora", 2), "merged", "method (one θ0)"),
    (
        "full-prefix s1",
        "methods",
        member("full", 1),
        member("prefix", 1),
        "merged",
        "method (one θ0)",
    ),
    (
        "lora-prefix s1",
        "methods",
        member("lora", 1),
        member("prefix", 1),
        "adapter",
        "method (one θ0)",
    ),
    (
        "full o1-o2",
        "orders",
        member("full", 1),
        member("full", 1, order2=True),
        "merged",
        "data order only",
    ),
    (
        "lora o1-o2 merged",
        "orders",
        member("lora", 1),
        member("lora", 1, order2=True),
        "merged",
        "data order only",
    ),
    (
        "lora o1-o2 adapter",
        "orders",
        member("lora", 1),
        member("lora", 1, order2=True),
        "adapter",
        "data order only",
    ),
    (
        "prefix o1-o2",
        "orders",
        member("prefix", 1),
        member("prefix", 1, order2=True),
        "adapter",
        "data order only",
    ),
    (
        "lora s1-s2 head shared",
        "head",
        member("lora", 1),
        "headshared/minilm000h1-lora-s2/final",
        "adapter",
        "LoRA init, dropout, order (one head)",
    ),
    (
        "prefix s1-s2 head shared",
        "head",
        member("prefix", 1),
        "headshared/minilm000h1-prefix-s2/final",
        "adapter",
        "prefix init, dropout, order (one head)",
    ),
    (
        "full s1 step10-final",
        "steps",
        member("full", 1, ckpt="step-10"),
        member("full", 1),
        "merged",
        "training steps 10 → 400",
    ),
    (
        "lora s1 step10-final",
        "steps",
        member("lora", 1, ckpt="step-10"),
        member("lora", 1),
        "merged",
        "training steps 10 → 400",
    ),
    (
        "prefix s1 step10-final",
        "steps",
        member("prefix", 1, ckpt="step-10"),
        member("prefix", 1),
        "adapter",
        "training steps 10 → 400",
    ),
]


def spec_of(a: str, b: str, space: str, points: int, data: Path) -> dict[str, Any]:
    return {
        "name": f"{a} → {b} ({space})",
        "path": {"type": "linear", "a": a, "b": b, "points": points},
        "dataset": str(data),
        "task": "classification",
        "metrics": ["loss", "accuracy"],
        "max_examples": 256,
        "batch_size": 64,
        "max_length": 48,
        "space": space,
        "device": "cpu",
        "dtype": "float32",
    }


def barrier_of(entry: dict[str, Any], metric: str) -> dict[str, Any]:
    from basin.analysis.barrier import barrier_sentence

    kept = {
        k: entry[k]
        for k in ("value", "alpha", "ci", "verdict", "tolerance", "examples_to_decide")
        if k in entry
    }
    kept["sentence"] = barrier_sentence(entry, metric)
    return kept


def evaluate(
    root: Path, key: str, a: str, b: str, space: str, points: int, data: Path
) -> dict[str, Any]:
    from basin import FileResolver, run
    from basin.errors import BasinError
    from basin.spec import parse_spec

    spec = spec_of(a, b, space, points, data)
    t0 = time.perf_counter()
    try:
        doc = run(parse_spec(spec), FileResolver(root), progress=False)
    except BasinError as e:  # a pair with no common parameter space: the refusal is the finding
        return {"spec": spec, "refused": f"{type(e).__name__}: {e}"}
    summary = doc["summary"]["barrier"]
    return {
        "spec": spec,
        "alphas": [round(p["coords"]["alpha"], 4) for p in doc["points"]],
        "loss": [round(p["metrics"]["loss"], 5) for p in doc["points"]],
        "accuracy": [round(p["metrics"]["accuracy"], 5) for p in doc["points"]],
        "barrier": {m: barrier_of(summary[m], m) for m in ("loss", "accuracy") if m in summary},
        "eval_s": round(time.perf_counter() - t0, 1),
    }


def members_table(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in PARTS:
        fam = root / part / "family.json"
        if not fam.is_file():
            continue
        for m in json.loads(fam.read_text())["members"]:
            losses = m["losses"]
            out[m["name"]] = {
                "tags": m["tags"],
                "heldout": {k: round(v, 4) for k, v in m["metrics"].items()},
                "train_loss_first20": round(sum(losses[:20]) / len(losses[:20]), 4),
                "train_loss_last20": round(sum(losses[-20:]) / len(losses[-20:]), 4),
                "steps": len(losses),
                "trainable_parameters": m.get("trainable_parameters"),
                "train_s": round(m["timings"]["train_s"], 1),
            }
    return out


def _fmt_ci(b: dict[str, Any]) -> str:
    lo, hi = b.get("ci") or (None, None)
    return f"{b['value']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{b['value']:.3f}"


def table(doc: dict[str, Any]) -> str:
    """The results as Markdown: members, then every path's loss and accuracy barriers."""
    rows = [
        "| member | trainable params | training loss (first → last 20 steps) | held-out loss | held-out accuracy |",
        "|---|---|---|---|---|",
    ]
    for name, m in doc["members"].items():
        rows.append(
            f"| {name} | {m['trainable_parameters']:,} | {m['train_loss_first20']:.3f} → "
            f"{m['train_loss_last20']:.3f} | {m['heldout']['loss']:.3f} | {m['heldout']['accuracy']:.3f} |"
        )
    rows += [
        "",
        "| path | varies | space | loss barrier [95 %] | verdict (loss) | accuracy barrier [95 %] | "
        "verdict (accuracy) | midpoint loss / accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    order = [p[0] for p in PATHS]
    for key, r in sorted(
        doc["paths"].items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)
    ):
        space = r["spec"]["space"]
        if "refused" in r:
            rows.append(
                f"| {key} | {r['varies']} | {space} | — | refused: {r['refused'].split(': ', 1)[-1][:140]} | | | |"
            )
            continue
        bl, ba = r["barrier"]["loss"], r["barrier"]["accuracy"]
        mid = len(r["loss"]) // 2
        rows.append(
            f"| {key} | {r['varies']} | {space} | {_fmt_ci(bl)} | {bl.get('verdict', '')} | {_fmt_ci(ba)} | "
            f"{ba.get('verdict', '')} | {r['loss'][mid]:.3f} / {r['accuracy'][mid]:.3f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.tune_family", description=__doc__.splitlines()[0]
    )
    ap.add_argument(
        "--root", type=Path, required=True, help="the folder holding full/ lora/ prefix/ order2/"
    )
    ap.add_argument(
        "--only",
        action="append",
        choices=sorted({p[1] for p in PATHS}),
        help="evaluate only these groups (repeatable); default all",
    )
    ap.add_argument(
        "--key",
        action="append",
        help="evaluate only the paths whose key contains this (repeatable)",
    )
    ap.add_argument("--points", type=int, default=11)
    ap.add_argument(
        "--data", type=Path, default=EVAL, help="held-out tweets (default examples/tweets-eval.csv)"
    )
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument(
        "--table", action="store_true", help="print the results file as Markdown tables and stop"
    )
    args = ap.parse_args(argv)
    if args.table:
        print(table(json.loads(args.results.read_text())))
        return 0
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    root = args.root.resolve()
    data = args.data.resolve()
    doc: dict[str, Any] = json.loads(args.results.read_text()) if args.results.is_file() else {}
    doc.update(
        {
            "kind": "basin-bench-tune-family",
            "root": str(root),
            "data": str(data),
            "members": members_table(root),
        }
    )
    paths = doc.setdefault("paths", {})
    for key, group, a, b, space, varies in PATHS:
        if (args.only and group not in args.only) or (
            args.key and not any(k in key for k in args.key)
        ):
            continue
        r = evaluate(root, key, a, b, space, args.points, data)
        r.update(group=group, varies=varies)
        paths[key] = r
        said = r.get("refused") or r["barrier"]["loss"]["sentence"]
        print(f"{key} [{space}]: {said}", flush=True)
        args.results.parent.mkdir(parents=True, exist_ok=True)
        args.results.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
