"""``python -m bench`` (``make bench``): how close Basin's engine runs to the hardware floor.

Workload (see :mod:`bench.workload`): the 26-point linear path between two fine-tuned
seeds of a small BERT, evaluated on held-out real tweets (MiniLM tokenizer). Timed in
one process, on the same batches, ``--reps`` times; medians are reported:

``limit_s``        26 plain forward passes over the evaluation batches with one fixed
                   model (length-sorted, dynamically padded): the floor for any tool.
``engine_s``       ``basin.engine.Landscape``: evaluating the 26 points (checkpoints
                   already loaded); ``engine_total_s`` includes ``Landscape.open``.
``naive_s``        research-code style: per point build a fresh model, load the state
                   dict mixed on the CPU, evaluate with padding to 128 tokens.
``peer_s``         PyPI ``loss-landscapes``: ``linear_interpolation(start, end, metric,
                   steps=26, deepcopy_model=True)`` with a metric over the same batches.

The three tools must agree (cross-entropy at α = 0.5 within 1e-4) so they did equal
work. Also: the frozen-prefix reuse speedups on the MiniLM demo under ``prefix_reuse``
(:mod:`bench.prefix`; ``--no-prefix`` skips it), generation (:mod:`bench.generation`), adaptive refinement's point count and
barrier error vs the uniform grid (:mod:`bench.refine`), the peak memory of a plane
through three ~500 M-parameter checkpoints (:mod:`bench.memory`) and training throughput of
``basin tune``'s member loop against a plain PyTorch loop (:mod:`bench.tune`). Results go to
``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import torch
import torch.nn.functional as F

from bench import workload

logger = logging.getLogger("bench")

POINTS = 26
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def read_eval(path: Path) -> tuple[list[str], list[int]]:
    import csv

    from basin.demo import LABELS

    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    return [r["text"] for r in rows], [LABELS.index(r["label"]) for r in rows]


def sorted_batches(tok, texts, labels, *, max_length: int, batch_size: int, device: str):
    """The engine's batching (:func:`basin.evaluate.base.length_batches`): examples sorted by
    token length, cut into ``batch_size`` chunks, each right-padded to its own longest row."""
    from basin.evaluate.base import length_batches, pad

    enc = tok(texts, truncation=True, max_length=max_length)
    ids = enc["input_ids"]
    out = []
    for idx in length_batches([len(x) for x in ids], batch_size):
        b = {"input_ids": pad([ids[i] for i in idx], tok.pad_token_id or 0),
             "attention_mask": pad([[1] * len(ids[i]) for i in idx], 0),
             "token_type_ids": pad([enc["token_type_ids"][i] for i in idx], 0),
             "labels": torch.tensor([labels[i] for i in idx])}
        out.append({k: v.to(device) for k, v in b.items()})
    return out


def padded_batches(tok, texts, labels, *, max_length: int, batch_size: int, device: str):
    """What research scripts do: dataset order, every batch padded to ``max_length``."""
    out = []
    for s in range(0, len(texts), batch_size):
        enc = tok(texts[s : s + batch_size], truncation=True, max_length=max_length, padding="max_length",
                  return_tensors="pt")
        b = {k: v.to(device) for k, v in enc.items()}
        b["labels"] = torch.tensor(labels[s : s + batch_size]).to(device)
        out.append(b)
    return out


def mean_loss(model, batches) -> float:
    """Mean cross-entropy over all examples, Σ_i CE(z_i, y_i) / N, on ``[{..., labels}]`` batches."""
    total = torch.zeros((), dtype=torch.float64, device=batches[0]["labels"].device)
    n = 0
    with torch.inference_mode():
        for b in batches:
            y = b["labels"]
            logits = model(**{k: v for k, v in b.items() if k != "labels"}).logits  # (B, C)
            total += F.cross_entropy(logits.float(), y, reduction="sum").double()
            n += y.shape[0]
    return float(total) / n


def timed(fn: Callable[[], object], device: str) -> tuple[float, object]:
    sync(device)
    t = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--examples", type=int, default=256)
    ap.add_argument("--warmup", type=int, default=None,
                    help="untimed repetitions first (default: 1 on CUDA, 0 on CPU)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--no-generation", action="store_true", help="skip the generation benchmark")
    ap.add_argument("--no-prefix", action="store_true", help="skip the frozen-prefix reuse benchmark (MiniLM demo)")
    ap.add_argument("--no-refine", action="store_true", help="skip the adaptive-refinement benchmark")
    ap.add_argument("--no-refine-demo", action="store_true",
                    help="adaptive refinement on the synthetic curves only (not on the MiniLM demo)")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory benchmark")
    ap.add_argument("--no-tune", action="store_true", help="skip the training-throughput benchmark (bench.tune)")
    ap.add_argument("--memory-params", type=float, default=500e6,
                    help="parameters of the random model the peak-memory benchmark writes (default 500e6: "
                         "three 2 GB checkpoints, ~8.5 GB of RAM)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.threads)
    dev = args.device
    if dev.startswith("cuda") and not torch.cuda.is_available():
        print("bench: error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2

    try:  # the peer tool; `make bench` installs it (the `bench` extra)
        import loss_landscapes
        from loss_landscapes.metrics import Metric
    except ImportError:
        loss_landscapes = None
        print("bench: loss-landscapes is not installed (pip install -e '.[bench]'; `make bench` "
              "does it): the peer column is skipped", file=sys.stderr)
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from basin.engine import Landscape
    from basin.resolve import FileResolver
    from basin.spec import parse_spec

    t_setup = time.perf_counter()
    w = workload.build(n_eval=args.examples)
    logger.info("workload ready in %s (%.1f s)", w.root, time.perf_counter() - t_setup)
    spec_d = {
        "path": {"type": "linear", "a": str(w.a), "b": str(w.b), "points": POINTS},
        "dataset": str(w.data), "task": "classification", "metrics": ["loss", "accuracy"],
        "max_examples": args.examples, "batch_size": 32, "max_length": 128, "device": dev,
        "dtype": "float32",  # fp32 everywhere so the three tools can agree to 1e-4
    }
    spec = parse_spec(spec_d)
    resolver = FileResolver()
    tok = AutoTokenizer.from_pretrained(w.a)
    texts, labels = read_eval(w.data)
    batches = sorted_batches(tok, texts, labels, max_length=128, batch_size=32, device=dev)
    cfg = AutoConfig.from_pretrained(w.a)
    sd_a = load_file(w.a / "model.safetensors")
    sd_b = load_file(w.b / "model.safetensors")
    alphas = [i / (POINTS - 1) for i in range(POINTS)]

    def load_model(path: Path):
        return AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).to(dev).eval()

    fixed = load_model(w.a)

    def run_limit():
        return [mean_loss(fixed, batches) for _ in range(POINTS)]

    def run_engine():
        t0 = time.perf_counter()
        ls = Landscape.open(spec, resolver)
        sync(dev)
        t1 = time.perf_counter()
        res = {p.index: ls.evaluate(p)["loss"] for p in ls.points()}
        sync(dev)
        t2 = time.perf_counter()
        ls.close()
        return t2 - t1, t2 - t0, [res[i] for i in range(POINTS)]

    naive_batches = padded_batches(tok, texts, labels, max_length=128, batch_size=32, device=dev)

    def naive_point(alpha: float) -> float:
        model = AutoModelForSequenceClassification.from_config(cfg)
        mixed = {k: (1 - alpha) * sd_a[k] + alpha * sd_b[k] if sd_a[k].is_floating_point() else sd_a[k]
                 for k in sd_a}
        missing, _ = model.load_state_dict(mixed, strict=False)
        params = dict(model.named_parameters())
        assert not [k for k in missing if k in params], f"naive: parameters not loaded: {missing}"
        model.to(dev).eval()
        return mean_loss(model, naive_batches)

    def run_naive():
        return [naive_point(a) for a in alphas]

    run_peer: Callable[[], list[float]] | None = None
    if loss_landscapes is not None:

        class LossMetric(Metric):
            """Mean cross-entropy over the benchmark's batches (same as the engine's ``loss``)."""

            def __call__(self, model_wrapper) -> float:
                model = model_wrapper.modules[0]
                model.eval()
                return mean_loss(model, batches)

        start, end = load_model(w.a), load_model(w.b)

        def run_peer() -> list[float]:
            return list(loss_landscapes.linear_interpolation(start, end, LossMetric(), steps=POINTS,
                                                             deepcopy_model=True))

    # warm-up (allocator, kernels, lazy imports), outside the timings
    mean_loss(fixed, batches[:2])
    times: dict[str, list[float]] = {"limit_s": [], "engine_s": [], "engine_total_s": [], "naive_s": []}
    if run_peer is not None:
        times["peer_s"] = []
    curves: dict[str, list[float]] = {}
    for _ in range(args.warmup if args.warmup is not None else int(dev.startswith("cuda"))):
        run_limit(), run_engine(), run_naive()
        if run_peer is not None:
            run_peer()
    for rep in range(args.reps):
        t, _ = timed(run_limit, dev)
        times["limit_s"].append(t)
        e_pts, e_tot, curves["engine"] = run_engine()
        times["engine_s"].append(e_pts)
        times["engine_total_s"].append(e_tot)
        t, curves["naive"] = timed(run_naive, dev)
        times["naive_s"].append(t)
        if run_peer is not None:
            t, curves["peer"] = timed(run_peer, dev)
            times["peer_s"].append(t)
        logger.info("rep %d/%d: %s", rep + 1, args.reps, {k: round(v[-1], 3) for k, v in times.items()})

    # Equal work: the loss at α = 0.5 from each tool. The engine's 26-point grid has no
    # α = 0.5 (steps of 1/25), so a 3-point spec of the same path gives it; loss-landscapes evaluates
    # α = i/26 for i = 1..26, so α = 0.5 is its 13th value.
    mid_spec = parse_spec({**spec_d, "path": {**spec_d["path"], "points": 3}})
    with Landscape.open(mid_spec, resolver) as ls:
        mid = next(p for p in ls.points() if abs(p.coords["alpha"] - 0.5) < 1e-9)
        engine_mid = ls.evaluate(mid)["loss"]
    mid_losses = {"engine": engine_mid, "naive": naive_point(0.5)}
    if "peer" in curves:
        mid_losses["peer"] = float(curves["peer"][12])
    spread = max(mid_losses.values()) - min(mid_losses.values())
    curve_diff = max(abs(x - y) for x, y in zip(curves["engine"], curves["naive"], strict=True))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "workload": {"path": "linear", "points": POINTS, "examples": len(texts), "batch_size": 32,
                     "max_length": 128, "model": "BERT 4 layers, hidden 128, MiniLM vocabulary",
                     "params": sum(v.numel() for v in sd_a.values()),
                     "tokens": int(sum(int(b["attention_mask"].sum()) for b in batches)),
                     "padded_tokens": int(sum(b["attention_mask"].numel() for b in batches)),
                     "naive_padded_tokens": int(sum(b["attention_mask"].numel() for b in naive_batches))},
        "reps": args.reps,
        **{k: round(v, 4) for k, v in med.items()},
        "all_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
        "engine_over_limit": round(med["engine_s"] / med["limit_s"], 3),
        "engine_total_over_limit": round(med["engine_total_s"] / med["limit_s"], 3),
        "naive_over_engine": round(med["naive_s"] / med["engine_s"], 2),
        "peer_over_engine": round(med["peer_s"] / med["engine_s"], 2) if "peer_s" in med else None,
        "loss_at_alpha_0.5": {k: round(v, 7) for k, v in mid_losses.items()},
        "agreement": {"spread_at_0.5": spread, "max_abs_diff_engine_vs_naive_curve": curve_diff},
        "targets": {"engine_over_limit_max": 1.10, "naive_over_engine_min": 3.0},
        "machine": {
            "device": dev if not dev.startswith("cuda") else f"{dev} ({torch.cuda.get_device_name()})",
            "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        },
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    ok_agree = spread <= 1e-4 and curve_diff <= 1e-4
    result["agreement"]["ok"] = ok_agree
    if not args.no_generation:
        from bench import generation

        result["generation"] = generation.run(workload.default_cache() / "generation", reps=args.reps, device=dev)
        ok_agree = ok_agree and result["generation"]["ok"]
    if not args.no_prefix:
        from basin.errors import DatasetError
        from bench import prefix

        try:
            result["prefix_reuse"] = prefix.run(workload.default_cache() / "demo", reps=args.reps, device=dev)
            ok_agree = ok_agree and result["prefix_reuse"]["agreement_ok"]
        except DatasetError as e:  # the demo's packages (the `demo` extra) are missing
            print(f"bench: the prefix-reuse benchmark is skipped: {e}", file=sys.stderr)
    if not args.no_refine:
        from bench import refine

        result["refine"] = refine.run(workload.default_cache() / "demo", device=dev,
                                      with_demo=not args.no_refine_demo)
    if not args.no_memory:
        from bench import memory

        result["memory"] = memory.run(workload.default_cache() / "memory", params=args.memory_params)
    if not args.no_tune:
        from basin.errors import DatasetError
        from bench import tune

        try:
            result["tune"] = tune.run(workload.default_cache() / "tune", reps=args.reps, device=dev)
            ok_agree = ok_agree and result["tune"]["ok"]
        except DatasetError as e:  # the demo's packages (the `demo` extra) are missing
            print(f"bench: the tune benchmark is skipped: {e}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    if "prefix_reuse" in result:
        from bench import prefix

        prefix.print_table(result["prefix_reuse"])
    print(f"\nwrote {args.out}")
    if not ok_agree:
        print(f"bench: error: tools disagree (spread at α=0.5 {spread:.2e}, curve {curve_diff:.2e}; "
              f"generation texts {result.get('generation', {}).get('identical_texts', 'n/a')})", file=sys.stderr)
        return 1
    return 0


def print_table(r: dict) -> None:
    m = r["machine"]
    print(f"\nBasin benchmark — {r['workload']['points']}-point linear path, {r['workload']['examples']} "
          f"tweets, {m['device']}, torch {m['torch']}, {m['cpu_count']} CPUs, median of {r['reps']}")
    print(f"{'method':<34}{'seconds':>10}{'× limit':>10}")
    rows = [("limit (26 forward passes)", "limit_s"), ("basin engine (points)", "engine_s"),
            ("basin engine (with load)", "engine_total_s"), ("naive (rebuild + pad 128)", "naive_s"),
            ("loss-landscapes", "peer_s")]
    for name, k in rows:
        if k in r:  # (no peer_s when loss-landscapes is not installed)
            print(f"{name:<34}{r[k]:>10.3f}{r[k] / r['limit_s']:>10.2f}")
    print(f"engine/limit {r['engine_over_limit']} (target ≤ 1.10)   naive/engine {r['naive_over_engine']} "
          f"(target ≥ 3)   peer/engine {r['peer_over_engine']}")
    print("loss at α=0.5: " + ", ".join(f"{k} {v:.6f}" for k, v in r["loss_at_alpha_0.5"].items()))
    g = r.get("generation")
    if g:
        w = g["workload"]
        print(f"\ngeneration — {len(w['alphas'])} α × {w['prompts']} prompts × {w['samples_per_prompt']} samples, "
              f"≤ {w['new_tokens']} new tokens, median of {g['reps']}")
        print(f"{'basin engine (batched, KV cache)':<34}{g['engine_s']:>10.3f} s{g['engine_tokens_per_s']:>10.1f} tok/s")
        print(f"{'naive (rebuild, one row at a time)':<34}{g['naive_s']:>10.3f} s{g['naive_tokens_per_s']:>10.1f} tok/s")
        print(f"naive/engine {g['naive_over_engine']}   identical texts {g['identical_texts']}")
    if r.get("refine"):
        from bench import refine

        refine.print_table(r["refine"])
    if r.get("memory"):
        from bench import memory

        memory.print_table(r["memory"])
    if r.get("tune"):
        from bench import tune

        tune.print_table(r["tune"])


if __name__ == "__main__":
    sys.exit(main())
