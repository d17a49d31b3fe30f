"""Memory benchmark: peak resident memory of opening a path and evaluating a point, against theory.

Three BERT classifiers of about ``params`` parameters with random weights (fp32) are
streamed to disk as safetensors (tensor by tensor: the writer never holds a model). A
fresh subprocess then opens a path through them (``plane m0, m1, m2`` on a 3 × 3 grid, or
``linear m0 → m1``; two short examples) and evaluates one point; it reports its resident
set before opening (the baseline: torch, transformers and the model's code imported — a
tiny model of the same class is built first, ~120 MB of code and import-time state) and
its peak (``VmHWM`` of ``/proc/self/status``: unlike ``ru_maxrss``, not inherited from the parent
at fork across exec).

Theory = what the path needs: the live model + the basis as held (origin and K directions:
fp32, or bf16 with ``dtype: bfloat16``, :mod:`basin.holding`) + the fp32 scratch of its
largest tensor where the mix goes tensor by tensor — bytes counted from the opened
landscape's own tensors. Modes:

- ``lazy``: the CLI (no checkpoint cache: checkpoints read tensor by tensor).
  Target: (peak − baseline) ≤ 1.1 × theory.
- ``worker``: the worker's own :class:`workers.cache.LandscapeCache` with its checkpoint
  cache bounded by ``cache_bytes`` (``BASIN_WORKER_CACHE_BYTES``). Target: (peak −
  baseline) ≤ 1.1 × (theory + the bytes the cache holds).
- ``eager``: an unbounded :class:`basin.checkpoints.CheckpointCache` (whole state dicts
  resident, as workers kept them before the byte bound) — for comparison.

``python -m bench.memory`` runs the table (see ``--help``); ``python -m bench`` runs the
default rows.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger("bench.memory")

TARGET = 1.10

#: a GPU's memory for the largest-model table: 80 GB (decimal; an "80 GB" card has 80 GiB =
#: 85.9e9 bytes, so ~5.9 GB stay for the CUDA context, activations and the allocator's slack)
GPU_BYTES = 80e9

_CHILD = r"""
import json, os, sys
import torch
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
from basin.checkpoints import CheckpointCache, state_bytes
from basin.engine import Landscape
from basin.resolve import FileResolver
from basin.spec import parse_spec

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
def rss():
    return status("VmRSS")
def hwm():
    # this process's own peak: ru_maxrss carries over the parent's resident set at fork across
    # exec (a big pytest process made every probe read its size); VmHWM restarts with exec
    return status("VmHWM")
root, mode, kind, dtype, cache_bytes = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
# the process baseline includes the model's code: import it and build a tiny model of its class first
from transformers import BertConfig, BertForSequenceClassification
BertForSequenceClassification(BertConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=1,
                                         intermediate_size=64))
if mode == "worker":
    from workers.cache import LandscapeCache
paths = {"plane": {"type": "plane", "a": "m0", "b": "m1", "c": "m2", "resolution": [3, 3]},
         "linear": {"type": "linear", "a": "m0", "b": "m1", "points": 3}}
spec = parse_spec({"path": paths[kind], "dataset": "data.csv", "max_examples": 2, "max_length": 16,
                   "batch_size": 2, "device": "cpu", "dtype": dtype})
base = rss()
before = hwm()
cached = 0
if mode == "worker":
    lc = LandscapeCache(max_items=2, checkpoint_bytes=cache_bytes)
    land, _ = lc.get(spec, FileResolver(root))
else:
    land = Landscape.open(spec, FileResolver(root), cache=CheckpointCache(4) if mode == "eager" else None)
loss = land.evaluate(land.point(1))["loss"]
peak = hwm()
if mode == "worker":
    cached = lc.checkpoints.nbytes
s = land.space
live = state_bytes({k: v for k, v in land.model.state_dict().items() if v.is_floating_point()})
held = state_bytes({str(i): t for i, t in enumerate([*s.origin, *(x for d in s.directions for x in d)])})
scratch = s._buf.nbytes if s._buf is not None else 0
print(json.dumps({"baseline": base, "maxrss_before": before, "peak": peak, "loss": loss,
                  "movable": sum(t.numel() for t in s.origin), "live_bytes": live, "held_bytes": held,
                  "scratch_bytes": scratch, "cache_bytes": cached, "held": str(land.held),
                  "largest": max(t.numel() for t in s.origin)}))
"""


def _config(params: float) -> Any:
    """A BERT config of about ``params`` parameters: 24 layers, hidden h with h² × 12 × 24 + h × 30522 ≈ params."""
    from transformers import BertConfig

    layers, vocab = 24, 30522
    h = (-vocab + math.sqrt(vocab**2 + 4 * 12 * layers * params)) / (2 * 12 * layers)
    h = max(64, int(round(h / 64)) * 64)
    cfg = BertConfig(
        vocab_size=vocab,
        hidden_size=h,
        num_hidden_layers=layers,
        num_attention_heads=h // 64,
        intermediate_size=4 * h,
    )
    cfg.num_labels = 2
    return cfg


def _write_safetensors(path: Path, shapes: dict[str, tuple[int, ...]], seed: int) -> None:
    """Random fp32 tensors written one at a time (the header first, offsets precomputed)."""
    header: dict[str, Any] = {}
    off = 0
    for k, s in shapes.items():
        n = 4 * math.prod(s)
        header[k] = {"dtype": "F32", "shape": list(s), "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    g = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for s in shapes.values():
            t = torch.randn(s, generator=g) * 0.02
            f.write(t.numpy().tobytes())


def build(root: Path, params: float) -> dict[str, Any]:
    """Three random checkpoints (``m0``, ``m1``, ``m2``) and a 2-row dataset under ``root``."""
    from transformers import AutoTokenizer, BertForSequenceClassification

    from basin.demo import minilm_path

    cfg = _config(params)
    stamp = root / "done.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("hidden") == cfg.hidden_size:
        return json.loads(stamp.read_text())
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    with torch.device("meta"):
        model = BertForSequenceClassification(cfg)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items() if v.is_floating_point()}
    n = sum(math.prod(s) for s in shapes.values())
    tok = AutoTokenizer.from_pretrained(minilm_path())
    for i in range(3):
        d = root / f"m{i}"
        d.mkdir()
        cfg.save_pretrained(d)
        tok.save_pretrained(d)
        _write_safetensors(d / "model.safetensors", shapes, seed=i)
        logger.info("wrote %s (%.2f GB)", d, 4 * n / 1e9)
    (root / "data.csv").write_text(
        "text,label\nthe film was fine,LABEL_1\nnot good at all,LABEL_0\n"
    )
    info = {"params": n, "hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers}
    stamp.write_text(json.dumps(info))
    return info


def measure(
    root: Path,
    mode: str,
    threads: int = 1,
    *,
    path: str = "plane",
    dtype: str = "float32",
    cache_bytes: int = 0,
) -> dict[str, Any]:
    """One probe in a fresh subprocess: ``mode`` lazy / worker / eager, ``path`` plane / linear."""
    import os

    env = {
        **os.environ,
        "BENCH_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(root), mode, path, dtype, str(int(cache_bytes))],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"memory probe ({mode}) failed: {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def row(
    root: Path,
    params: float,
    mode: str,
    *,
    path: str = "plane",
    dtype: str = "float32",
    cache_bytes: int = 0,
) -> dict[str, Any]:
    """One row of the table: the probe plus theory and ratio (see the module docstring)."""
    info = build(root / f"p{int(params / 1e6)}m", params)
    got = measure(
        root / f"p{int(params / 1e6)}m", mode, path=path, dtype=dtype, cache_bytes=cache_bytes
    )
    theory = got["live_bytes"] + got["held_bytes"] + got["scratch_bytes"]
    used = got["peak"] - got["baseline"]
    against = theory + (got["cache_bytes"] if mode == "worker" else 0)
    out = {
        "mode": mode,
        "path": path,
        "dtype": dtype,
        "params": info["params"],
        "hidden": info["hidden"],
        "layers": info["layers"],
        "cache_bound_gb": round(cache_bytes / 1e9, 3) if mode == "worker" else None,
        "baseline_gb": round(got["baseline"] / 1e9, 3),
        "peak_gb": round(got["peak"] / 1e9, 3),
        "used_gb": round(used / 1e9, 3),
        "theory_gb": round(theory / 1e9, 3),
        "live_gb": round(got["live_bytes"] / 1e9, 3),
        "held_gb": round(got["held_bytes"] / 1e9, 3),
        "scratch_gb": round(got["scratch_bytes"] / 1e9, 3),
        "cache_gb": round(got["cache_bytes"] / 1e9, 3),
        "ratio": round(used / against, 3),
        "used_over_theory": round(used / theory, 3),  # a worker: beyond the path, cache included
        "movable": got["movable"],
        "loss": got["loss"],
    }
    out["ok"] = mode == "eager" or out["ratio"] <= TARGET
    logger.info("memory %s %s %s: %s", mode, path, dtype, out)
    return out


#: ``python -m bench``'s default rows: (mode, path, dtype, params, cache bytes or None: the default bound)
DEFAULT_ROWS: list[tuple[str, str, str, float, float | None]] = [
    ("lazy", "plane", "float32", 1.0, 0),
    ("lazy", "plane", "bfloat16", 1.0, 0),
    ("worker", "plane", "float32", 0.3, None),  # at 0.3 × params all three fit the default bound
]


def run(
    root: Path,
    *,
    params: float = 500e6,
    eager_params: float | None = None,
    rows: list[tuple[str, str, str, float, float | None]] | None = None,
) -> dict[str, Any]:
    """The table's rows (default :data:`DEFAULT_ROWS`, params × ``params``), and an unbounded
    ``eager`` row at ``eager_params`` for comparison when given."""
    from workers.cache import DEFAULT_CACHE_BYTES

    out: dict[str, Any] = {"target": TARGET, "rows": []}
    for mode, path, dtype, scale, cache in rows or DEFAULT_ROWS:
        bound = DEFAULT_CACHE_BYTES if cache is None else int(cache)
        out["rows"].append(
            row(root, params * scale, mode, path=path, dtype=dtype, cache_bytes=bound)
        )
    if eager_params:
        out["rows"].append(row(root, eager_params, "eager"))
    out["largest_on_gpu"] = largest_on_gpu(out["rows"])
    out["ok"] = all(r["ok"] for r in out["rows"])
    return out


#: bytes per parameter on the device, by path and held dtype: the live model + origin + K directions
#: (K = 1 linear, 2 plane); "before" = the fp32 masters a bf16 model had before (plus its fp32 scratch)
def bytes_per_param(path: str, held: str, where: str = "device") -> float:
    k = 1 if path == "linear" else 2
    if held == "float32":
        return 4.0 * (2 + k)
    if held == "bf16 model, fp32 masters (before)":
        return 2.0 + 4.0 * (1 + k) + 4.0
    if where == "host":  # the basis streamed from the host: the device holds the live model
        return 2.0
    return 2.0 * (2 + k)


def largest_on_gpu(
    rows: list[dict[str, Any]], gpu_bytes: float = GPU_BYTES
) -> list[dict[str, Any]]:
    """The largest model whose path fits ``gpu_bytes``: theory (bytes per parameter) and the
    theory divided by the measured ratio of the same path and dtype (CLI rows), where measured."""
    measured = {(r["path"], r["dtype"]): r["ratio"] for r in rows if r["mode"] == "lazy"}
    out = []
    for path in ("linear", "plane"):
        for held, where in (
            ("float32", "device"),
            ("bf16 model, fp32 masters (before)", "device"),
            ("bfloat16", "device"),
            ("bfloat16", "host"),
        ):
            bpp = bytes_per_param(path, held, where)
            ratio = measured.get((path, held)) if where == "device" else None
            out.append(
                {
                    "path": path,
                    "held": held,
                    "where": where,
                    "bytes_per_param": bpp,
                    "largest_b_params": round(gpu_bytes / bpp / 1e9, 2),
                    "measured_ratio": ratio,
                    "largest_b_params_measured": round(gpu_bytes / bpp / ratio / 1e9, 2)
                    if ratio
                    else None,
                }
            )
    return out


def print_table(r: dict) -> None:
    print(
        "\nmemory — peak RSS beyond the baseline vs theory (live model + basis as held + fp32 scratch; "
        "worker: + the checkpoint cache's bytes); random BERT, CPU"
    )
    print(
        f"{'mode':<7}{'path':<7}{'held':<10}{'params':>9}{'cache bound':>12}{'theory GB':>10}{'cache GB':>9}"
        f"{'used GB':>9}{'ratio':>7}{'used/theory':>12}"
    )
    for m in r.get("rows", []):
        bound = "-" if m["cache_bound_gb"] is None else f"{m['cache_bound_gb']:.2f} GB"
        print(
            f"{m['mode']:<7}{m['path']:<7}{m['dtype']:<10}{m['params'] / 1e6:>8.0f}M{bound:>12}"
            f"{m['theory_gb']:>10.2f}{m['cache_gb']:>9.2f}{m['used_gb']:>9.2f}{m['ratio']:>7.3f}"
            f"{m.get('used_over_theory', m['used_gb'] / m['theory_gb']):>12.3f}"
        )
    print(f"target ≤ {r['target']} (lazy, worker) — {'met' if r['ok'] else 'NOT met'}")
    if r.get("largest_on_gpu"):
        print(
            f"\nlargest model per {GPU_BYTES / 1e9:.0f} GB GPU (bytes per parameter on the device)"
        )
        for g in r["largest_on_gpu"]:
            chk = (
                f"{g['largest_b_params_measured']:.2f} B at the measured ratio {g['measured_ratio']}"
                if g["largest_b_params_measured"]
                else ""
            )
            print(
                f"{g['path']:<7}{g['held'] + (' (held on the host)' if g['where'] == 'host' else ''):<44}"
                f"{g['bytes_per_param']:>5.0f} B/param  {g['largest_b_params']:>6.2f} B params  {chk}"
            )


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.memory``: the memory table (rows of mode × path × dtype at given sizes)."""
    from bench import workload

    ap = argparse.ArgumentParser(
        prog="python -m bench.memory", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument(
        "--params", type=float, default=300e6, help="parameters of the random BERT (default 300e6)"
    )
    ap.add_argument("--modes", default="lazy,worker", help="comma-separated: lazy, worker, eager")
    ap.add_argument("--paths", default="plane,linear")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument(
        "--cache-bytes",
        type=float,
        default=None,
        help="the worker rows' checkpoint cache bound (default: BASIN_WORKER_CACHE_BYTES's default)",
    )
    ap.add_argument(
        "--root",
        type=Path,
        default=None,
        help="where the checkpoints are written (default $BASIN_BENCH_CACHE/memory)",
    )
    ap.add_argument("--out", type=Path, default=None, help="write the result as JSON here")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr
    )
    rows = [
        (m, p, d, 1.0, args.cache_bytes)
        for m in args.modes.split(",")
        for p in args.paths.split(",")
        for d in args.dtypes.split(",")
    ]
    result = run(args.root or workload.default_cache() / "memory", params=args.params, rows=rows)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
