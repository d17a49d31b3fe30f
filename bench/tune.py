"""Training throughput of :func:`basin.tune.train.train_member` against a plain PyTorch loop.

Workload: all-MiniLM-L6-v2 with a fresh 2-way head (θ0 = ``init-s1``, written by the first
member) fine-tuned on the demo's real tweets (:func:`basin.demo.tune_assets`: 2048 training
rows, held-out rows elsewhere), batch 16, max_length 48, ``steps`` AdamW steps, fp32, for
each method (``full``, ``lora``). Per repetition, in one process, the two take turns:

``tune``   ``train_member`` (no intermediate checkpoints, no cartography): its training
           loop's own examples/s (``timings.examples_per_s``: opening, θ0, tokenising and
           the final save are outside it).
``plain``  the same recipe written as a bare loop over the *same batches*, tokenised and
           padded before the clock starts: AdamW, linear decay, clipping, forward/backward.

The two must end at bit-identical weights (the same work); the ratio ``tune / plain`` of
their best repetitions (a busy machine only slows a loop down; medians are reported too)
has a target of ≥ 0.95. They take turns, each going first every other repetition. Also
reported: the same ratio per CPU second of this process (``time.process_time``), which other
jobs on a shared machine disturb far less than the wall clock (run it with ``--threads 1``). ``python -m bench.tune`` runs it alone and
writes ``bench/results/tune.json``; ``python -m bench`` includes it (``--no-tune`` skips it).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("bench.tune")

TARGET = 0.95
RESULTS = Path(__file__).resolve().parent / "results" / "tune.json"
METHODS = ({"name": "full"}, {"name": "lora", "r": 8, "learning_rates": [1e-3]})


def _spec(folder: Path, method: dict[str, Any], steps: int, device: str) -> Any:
    from basin.tune import parse_tune_spec

    return parse_tune_spec(
        {
            "base": str(folder / "minilm"),
            "dataset": str(folder / "tweets-train.csv"),
            "eval_dataset": str(folder / "tweets-eval.csv"),
            "eval_max_examples": 64,
            "family": "bench",
            "seeds": [1],
            "methods": [method],
            "learning_rates": [1e-4],
            "steps": steps,
            "batch_size": 16,
            "max_length": 48,
            "device": device,
        }
    )


def _plain(
    spec: Any, member: Any, init: Path, device: str
) -> tuple[float, float, dict[str, torch.Tensor]]:
    """The bare loop on the same batches: ``(examples/s, examples per CPU second, final
    trainable tensors)``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from basin.evaluate.base import pad
    from basin.tune.train import apply_method

    label2id = json.loads((init / "config.json").read_text())["label2id"]
    with open(spec.dataset, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    tok = AutoTokenizer.from_pretrained(init)
    ids = tok([r["text"] for r in rows], truncation=True, max_length=spec.max_length)["input_ids"]
    labels = [label2id[r["label"]] for r in rows]
    model = AutoModelForSequenceClassification.from_pretrained(init).to(device)
    model = apply_method(
        model, member.method, spec.task, member.seed
    )  # peft's model, seeded as train_member
    torch.manual_seed(member.seed)
    g = torch.Generator().manual_seed(member.order)
    batches: list[dict[str, torch.Tensor]] = []
    while len(batches) < spec.steps:
        perm = torch.randperm(len(rows), generator=g).tolist()
        for s in range(0, len(rows), spec.batch_size):
            idx = perm[s : s + spec.batch_size]
            b = {
                "input_ids": pad([ids[i] for i in idx], tok.pad_token_id or 0),
                "attention_mask": pad([[1] * len(ids[i]) for i in idx], 0),
                "labels": torch.tensor([labels[i] for i in idx]),
            }
            if member.method.name == "full":
                b["token_type_ids"] = torch.zeros_like(b["input_ids"])
            batches.append({k: v.to(device) for k, v in b.items()})
            if len(batches) == spec.steps:
                break
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=member.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / spec.steps))
    model.train()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t, c = time.perf_counter(), time.process_time()
    for b in batches:
        loss = model(**b).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    secs, cpu = time.perf_counter() - t, time.process_time() - c
    n = sum(int(b["labels"].shape[0]) for b in batches)
    if member.method.name == "full":
        return n / secs, n / cpu, {k: v.detach().cpu() for k, v in model.named_parameters()}
    import peft

    return (
        n / secs,
        n / cpu,
        {k: v.detach().cpu() for k, v in peft.get_peft_model_state_dict(model).items()},
    )


def _same(final: Path, own: dict[str, torch.Tensor]) -> bool:
    """Whether the saved checkpoint holds exactly ``own``'s values (a full model: every parameter)."""
    from safetensors.torch import load_file

    full = final / "model.safetensors"
    stored = load_file(full if full.is_file() else final / "adapter_model.safetensors")
    return set(own) <= set(stored) and all(torch.equal(stored[k], v) for k, v in own.items())


def run(folder: Path, *, steps: int = 16, reps: int = 2, device: str = "cpu") -> dict[str, Any]:
    """Time both loops per method (they alternate, ``reps`` times each); the result document."""
    from basin.demo import tune_assets
    from basin.resolve import FileResolver
    from basin.tune import members
    from basin.tune.train import train_member

    tune_assets(folder)
    out: dict[str, Any] = {
        "workload": {
            "model": "all-MiniLM-L6-v2 + fresh head",
            "rows": 2048,
            "batch_size": 16,
            "max_length": 48,
            "steps": steps,
            "device": device,
        },
        "reps": reps,
        "methods": {},
        "target": TARGET,
    }
    ok = True
    for method in METHODS:
        spec = _spec(folder, method, steps, device)
        member = members(spec)[0]
        tune_eps, plain_eps, tune_cpu, plain_cpu = [], [], [], []
        identical = True
        for rep in range(reps):  # the two take turns, each going first every other repetition
            # (repetition 0 starts with train_member, which writes θ0 the plain loop starts from)
            for which in ("tune", "plain") if rep % 2 == 0 else ("plain", "tune"):
                if which == "tune":
                    shutil.rmtree(folder / "out" / member.name, ignore_errors=True)
                    final = train_member(spec, member, FileResolver(folder), folder / "out")
                    tune_eps.append(final.timings["examples_per_s"])
                    tune_cpu.append(final.examples_seen / final.timings["train_cpu_s"])
                else:
                    eps, cps, own = _plain(spec, member, folder / "out" / "init-s1", device)
                    plain_eps.append(eps)
                    plain_cpu.append(cps)
            identical &= _same(final.final, own)
        # a busy machine only ever slows a loop down: the best repetition is each one's own speed
        ratio = max(tune_eps) / max(plain_eps)
        out["methods"][member.method.name] = {
            "tune_examples_per_s": round(max(tune_eps), 2),
            "plain_examples_per_s": round(max(plain_eps), 2),
            "tune_median_examples_per_s": round(statistics.median(tune_eps), 2),
            "plain_median_examples_per_s": round(statistics.median(plain_eps), 2),
            "tune_over_plain": round(ratio, 3),
            # per CPU second of this process: what a busy machine's other jobs disturb least
            "tune_cpu_examples_per_s": round(max(tune_cpu), 2),
            "plain_cpu_examples_per_s": round(max(plain_cpu), 2),
            "tune_over_plain_cpu": round(max(tune_cpu) / max(plain_cpu), 3),
            "identical_weights": identical,
            "all_tune": [round(x, 2) for x in tune_eps],
            "all_plain": [round(x, 2) for x in plain_eps],
        }
        ok &= identical
    out["ok"] = ok
    out["meets_target"] = all(m["tune_over_plain"] >= TARGET for m in out["methods"].values())
    return out


def print_table(r: dict[str, Any]) -> None:
    w = r["workload"]
    print(
        f"\ntune throughput — MiniLM, {w['steps']} steps × batch {w['batch_size']}, {w['device']}, "
        f"best of {r['reps']}, {r.get('machine', {}).get('threads', '?')} thread(s)"
    )
    print(
        f"{'method':<10}{'train_member ex/s':>20}{'plain loop ex/s':>18}{'ratio':>8}{'ratio (CPU s)':>15}  identical"
    )
    for name, m in r["methods"].items():
        print(
            f"{name:<10}{m['tune_examples_per_s']:>20.1f}{m['plain_examples_per_s']:>18.1f}"
            f"{m['tune_over_plain']:>8.3f}{m.get('tune_over_plain_cpu', float('nan')):>15.3f}  {m['identical_weights']}"
        )
    print(f"target ≥ {r['target']}: {'met' if r['meets_target'] else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    from bench import workload

    ap = argparse.ArgumentParser(prog="python -m bench.tune", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    r = run(workload.default_cache() / "tune", steps=args.steps, reps=args.reps, device=args.device)
    r["machine"] = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }  # (set before the run)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(r, indent=1) + "\n")
    print_table(r)
    print(f"\nwrote {args.out}")
    if not r["ok"]:
        print(
            "bench: error: train_member and the plain loop ended at different weights",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
