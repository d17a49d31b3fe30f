"""003's tables at small scale: MiniLM on tweets, three delta-tuning methods, the subspace.

    cd /work/wt/subspace && PYTHONPATH=$PWD /work/wt/cpu python bench/subspace_minilm.py OUT_DIR

Trains with peft directly (no Basin job): ``adapter`` (a rank-8 LoRA on each FFN's
``intermediate.dense``: a bottleneck beside the feed-forward layer; peft has no Houlsby
adapter), ``prompt`` (prompt tuning, 8 virtual tokens: peft's prefix tuning cannot run on
BERT encoders with transformers 5.x, see docs/subspace.md) and ``lora`` (rank 8 on
query/value), each with its own copy of the classifier head, from all-MiniLM-L6-v2 with a
seeded fresh 2-way head. Then ``basin.subspace.run``: the fit (stage 1), optimisation
through each method from I = 0 (stage 2) and the decode through the others (stage 3),
and the simplex landscape of the three intrinsic vectors decoded through each method.
Writes ``OUT_DIR/<sizes tag>/tables.md`` and ``results.json``. Sizes: ``SIZES`` below.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

SIZES = {
    "train": 1200,
    "eval": 300,
    "steps": 60,
    "lr": {"adapter": 3e-3, "prompt": 3e-2, "lora": 3e-3},
    "batch": 16,
    "max_length": 40,
    "fit_steps": 60,
    "fit_lr": 1e-3,
    "opt_steps": 30,
    "y": 4,
    "hidden": 32,
    "simplex": 5,
}
#: ``SUBSPACE_BENCH='{"fit_steps": 200, "fit_lr": 3e-3}'`` overrides sizes (the solutions, once
#: trained in OUT_DIR, are reused; the fit and what follows are redone into OUT_DIR/<tag>)


def train_solution(base: Path, out: Path, method: str, rows, seed: int) -> Path:
    from peft import LoraConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(base))
    model = AutoModelForSequenceClassification.from_pretrained(str(base))
    cfg = {
        "adapter": lambda: LoraConfig(
            task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules=["intermediate.dense"]
        ),
        "prompt": lambda: PromptTuningConfig(task_type="SEQ_CLS", num_virtual_tokens=8),
        "lora": lambda: LoraConfig(
            task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules=["query", "value"]
        ),
    }[method]()
    pm = get_peft_model(model, cfg)
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=SIZES["lr"][method])
    g = torch.Generator().manual_seed(seed)
    pm.train()
    for _ in range(SIZES["steps"]):
        idx = torch.randint(len(rows), (SIZES["batch"],), generator=g).tolist()
        enc = tok(
            [rows[i][0] for i in idx],
            padding=True,
            truncation=True,
            max_length=SIZES["max_length"],
            return_tensors="pt",
        )
        loss = pm(**enc, labels=torch.tensor([int(rows[i][1] == "positive") for i in idx])).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    pm.eval()
    pm.save_pretrained(str(out))
    return out


def main(out: Path) -> None:
    import os

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from basin.demo import balanced_split, load_tweets, minilm_path, write_csv
    from basin.resolve import FileResolver
    from basin.subspace.core import Subspace
    from basin.subspace.methods import batches
    from basin.subspace.run import _dataset, _open_subspace, run_fit, run_optimise
    from basin.subspace.spec import FitSpec, OptimiseSpec

    over = json.loads(os.environ.get("SUBSPACE_BENCH", "{}"))
    SIZES.update(over)
    t0 = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    run_dir = out / ("-".join(f"{k}{v}" for k, v in sorted(over.items())) or "default")
    ev, tr = balanced_split(load_tweets(), SIZES["eval"], SIZES["train"], seed=0)
    write_csv(out / "train.csv", tr)
    write_csv(out / "eval.csv", ev)
    base = out / "minilm-init"
    if not (base / "model.safetensors").is_file():
        torch.manual_seed(0)
        m = AutoModelForSequenceClassification.from_pretrained(
            str(minilm_path()),
            num_labels=2,
            id2label={0: "negative", 1: "positive"},
            label2id={"negative": 0, "positive": 1},
        )
        m.save_pretrained(str(base))
        AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(str(base))
    times = {}
    for seed, method in enumerate(("adapter", "prompt", "lora"), start=1):
        if not (out / method / "adapter_model.safetensors").is_file():
            t = time.monotonic()
            train_solution(base, out / method, method, tr, seed)
            times[f"train {method}"] = round(time.monotonic() - t, 1)
    res = FileResolver(out)
    t = time.monotonic()
    fit = run_fit(
        FitSpec(
            tasks={
                "tweets": {
                    "train": "train.csv",
                    "eval": "eval.csv",
                    "solutions": {m: f"{m}::minilm-init" for m in ("adapter", "prompt", "lora")},
                }
            },
            y=SIZES["y"],
            hidden=SIZES["hidden"],
            steps=SIZES["fit_steps"],
            lr=SIZES["fit_lr"],
            batch_size=SIZES["batch"],
            max_length=SIZES["max_length"],
            eval_examples=SIZES["eval"],
            train_examples=SIZES["train"],
        ),
        res,
        run_dir / "fit",
    )
    times["fit"] = round(time.monotonic() - t, 1)
    opt = {}
    for m in ("adapter", "prompt", "lora"):
        t = time.monotonic()
        opt[m] = run_optimise(
            OptimiseSpec(
                projections=str(run_dir / "fit" / "projections"),
                base="minilm-init",
                method=m,
                train="train.csv",
                eval="eval.csv",
                steps=SIZES["opt_steps"],
                lr=5e-2,
                batch_size=SIZES["batch"],
                max_length=SIZES["max_length"],
                eval_examples=SIZES["eval"],
                train_examples=SIZES["train"],
            ),
            res,
            run_dir / f"opt-{m}",
        )
        times[f"optimise {m}"] = round(time.monotonic() - t, 1)
    # the simplex: I = α·I_A + β·I_P + (1−α−β)·I_L on a triangular grid, decoded through each method
    t = time.monotonic()
    sub = Subspace.load(run_dir / "fit" / "projections")
    _, basesrc, methods = _open_subspace(
        run_dir / "fit" / "projections", "minilm-init", res, None, "classification"
    )
    tok = AutoTokenizer.from_pretrained(str(base))
    evb = batches(
        tok, _dataset(res, "eval.csv", basesrc, SIZES["eval"], 0), 64, SIZES["max_length"]
    )
    ints = sub.intrinsic["tweets"]
    k = SIZES["simplex"]
    simplex = []
    for i in range(k + 1):
        for j in range(k + 1 - i):
            a, b = i / k, j / k
            mix = a * ints["adapter"] + b * ints["prompt"] + (1 - a - b) * ints["lora"]
            with torch.no_grad():
                row = {
                    "alpha": a,
                    "beta": b,
                    **{
                        m: methods[m].evaluate(sub.decode(m, mix), evb)["accuracy"] for m in methods
                    },
                }
            simplex.append(row)
    times["simplex"] = round(time.monotonic() - t, 1)
    results = {
        "sizes": SIZES,
        "fit": fit,
        "optimise": opt,
        "simplex": simplex,
        "seconds": times,
        "total_seconds": round(time.monotonic() - t0, 1),
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))
    (run_dir / "tables.md").write_text(tables(results))
    print(tables(results))


def tables(r: dict) -> str:
    names = ("adapter", "prompt", "lora")
    lines = [
        "| method | params | original acc / loss | reconstruction acc / loss | ‖θ̂−θ‖/‖θ‖ |",
        "|---|---|---|---|---|",
    ]
    for row in r["fit"]["rows"]:
        o, c = row["original"], row["reconstruction"]
        lines.append(
            f"| {row['method']} | {row['parameters']} | {o['accuracy']:.3f} / {o['loss']:.3f} | "
            f"{c['accuracy']:.3f} / {c['loss']:.3f} | {row['relative_distance']:.3f} |"
        )
    lines += [
        "",
        "optimised through (row) → evaluated as (column), accuracy / loss; diagonal: subspace "
        "optimisation, off-diagonal: transfer",
        "",
        "| through \\ as | " + " | ".join(names) + " |",
        "|---|---|---|---|",
    ]
    for m in names:
        by = {row["method"]: row["eval"] for row in r["optimise"][m]["rows"]}
        lines.append(
            f"| {m} | "
            + " | ".join(f"{by[n]['accuracy']:.3f} / {by[n]['loss']:.3f}" for n in names)
            + " |"
        )
    lines += [
        "",
        "simplex (α on adapter, β on prompt, rest on lora): accuracy decoded as each method",
        "",
        "| α | β | " + " | ".join(names) + " |",
        "|---|---|---|---|---|",
    ]
    for row in r["simplex"]:
        lines.append(
            f"| {row['alpha']:.1f} | {row['beta']:.1f} | "
            + " | ".join(f"{row[n]:.3f}" for n in names)
            + " |"
        )
    lines += ["", f"seconds: {r['seconds']}, total {r['total_seconds']}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "subspace-bench"))
