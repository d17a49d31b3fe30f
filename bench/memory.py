"""Lean-memory benchmark: peak memory of building a plane through three checkpoints.

Three BERT classifiers of about ``params`` parameters with random weights (fp32) are
streamed to disk as safetensors (tensor by tensor: the writer never holds a model). A
fresh subprocess then opens ``plane a, b, c`` with :meth:`basin.engine.Landscape.open`
(a 3 × 3 grid, two short examples) and evaluates one point; it reports its resident set
before opening (the baseline: torch, transformers and the model's code imported — a tiny
model of the same class is built first, ~120 MB of code and import-time state) and its
peak (``resource.getrusage(RUSAGE_SELF).ru_maxrss``).

``theory`` = live model + origin + two directions = 4 × params × 4 bytes (fp32): the
floor of any in-memory plane. Target: (peak − baseline) ≤ 1.1 × theory with lazy
loading (no checkpoint cache: the CLI). ``eager`` repeats it with a
:class:`basin.checkpoints.CheckpointCache` (whole state dicts resident, as a worker keeps
them between runs) for comparison.
"""

from __future__ import annotations

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

_CHILD = r"""
import json, os, resource, sys
import torch
torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "1")))
from basin.checkpoints import CheckpointCache
from basin.engine import Landscape
from basin.resolve import FileResolver
from basin.spec import parse_spec

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
root, mode = sys.argv[1], sys.argv[2]
# the process baseline includes the model's code: import it and build a tiny model of its class first
from transformers import BertConfig, BertForSequenceClassification
BertForSequenceClassification(BertConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=1,
                                         intermediate_size=64))
spec = parse_spec({"path": {"type": "plane", "a": "m0", "b": "m1", "c": "m2", "resolution": [3, 3]},
                   "dataset": "data.csv", "max_examples": 2, "max_length": 16, "batch_size": 2,
                   "device": "cpu", "dtype": "float32"})
base = rss()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
cache = CheckpointCache(4) if mode == "eager" else None
land = Landscape.open(spec, FileResolver(root), cache=cache)
loss = land.evaluate(land.point(4))["loss"]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"baseline": base, "maxrss_before": before, "peak": peak, "loss": loss,
                  "movable": sum(t.numel() for t in land.space.origin)}))
"""


def _config(params: float) -> Any:
    """A BERT config of about ``params`` parameters: 24 layers, hidden h with h² × 12 × 24 + h × 30522 ≈ params."""
    from transformers import BertConfig

    layers, vocab = 24, 30522
    h = (-vocab + math.sqrt(vocab**2 + 4 * 12 * layers * params)) / (2 * 12 * layers)
    h = max(64, int(round(h / 64)) * 64)
    cfg = BertConfig(vocab_size=vocab, hidden_size=h, num_hidden_layers=layers, num_attention_heads=h // 64,
                     intermediate_size=4 * h)
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
    (root / "data.csv").write_text("text,label\nthe film was fine,LABEL_1\nnot good at all,LABEL_0\n")
    info = {"params": n, "hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers}
    stamp.write_text(json.dumps(info))
    return info


def measure(root: Path, mode: str, threads: int = 1) -> dict[str, Any]:
    import os

    env = {**os.environ, "BENCH_THREADS": str(threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(root), mode], capture_output=True, text=True,
                         env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe ({mode}) failed: {out.stderr[-2000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(root: Path, *, params: float = 500e6, eager_params: float | None = 100e6) -> dict[str, Any]:
    """Lazy (and, at ``eager_params``, eager for comparison) peak memory of a plane."""
    out: dict[str, Any] = {"target": TARGET}
    for mode, size in (("lazy", params), ("eager", eager_params)):
        if not size:
            continue
        info = build(root / f"p{int(size / 1e6)}m", size)
        got = measure(root / f"p{int(size / 1e6)}m", mode)
        theory = 4 * 4 * info["params"]
        used = got["peak"] - got["baseline"]
        out[mode] = {"params": info["params"], "hidden": info["hidden"], "layers": info["layers"],
                     "baseline_gb": round(got["baseline"] / 1e9, 3), "peak_gb": round(got["peak"] / 1e9, 3),
                     "used_gb": round(used / 1e9, 3), "theory_gb": round(theory / 1e9, 3),
                     "ratio": round(used / theory, 3), "movable": got["movable"]}
        logger.info("memory %s: %s", mode, out[mode])
    out["ok"] = "lazy" in out and out["lazy"]["ratio"] <= TARGET
    return out


def print_table(r: dict) -> None:
    print("\nlean memory — plane through three checkpoints (random BERT, fp32), peak RSS beyond the baseline")
    for mode in ("lazy", "eager"):
        m = r.get(mode)
        if m:
            print(f"{mode:<6} {m['params'] / 1e6:>6.0f} M params: {m['used_gb']:.2f} GB used, theory "
                  f"(model + origin + 2 directions) {m['theory_gb']:.2f} GB, ratio {m['ratio']:.3f}")
    print(f"target ≤ {r['target']} (lazy) — {'met' if r['ok'] else 'NOT met'}")
