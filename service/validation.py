"""Validating what enters the store as a checkpoint: the model folder (config loads, weights
present, safetensors structure, ``.bin`` via ``weights_only``, config fits the weights), its
content id (sha256), and the parameter summary its manifest records.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

from basin.checkpoints import (
    load_state_dict,
    tensor_meta,
    weight_files,
)
from basin.errors import CheckpointError
from basin.formats import read_safetensors_header
from basin.resolve import CheckpointSource
from basin.skeleton import check_config_fits_weights


def validate_safetensors(path: Path) -> dict[str, dict[str, Any]]:
    """Check a safetensors file's structure without reading its weights; return its header
    (:func:`basin.formats.read_safetensors_header`, the one reader the core uses too)."""
    return read_safetensors_header(path)


def validate_config(config_dir: Path) -> None:
    """``config.json`` must exist and load with ``transformers.AutoConfig`` (no remote code)."""
    if not (config_dir / "config.json").is_file():
        raise CheckpointError("config.json is missing: a checkpoint needs its Hugging Face config")
    from transformers import AutoConfig  # heavy import, only when validating

    try:
        AutoConfig.from_pretrained(str(config_dir), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers raises many types for bad configs
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"config.json does not load with transformers: {msg}") from None


def validate_model_dir(directory: Path) -> list[Path]:
    """Validate a Hugging Face model directory; return its weight files.

    Checks: ``config.json`` loads; weights exist (``model.safetensors``, sharded
    safetensors, or ``pytorch_model.bin``); each safetensors file's structure
    (:func:`validate_safetensors`); a ``.bin`` is read only with
    ``torch.load(weights_only=True)``, so a pickle carrying code is refused unexecuted;
    the model the config declares fits the weights (parameter count, names and shapes,
    checked on a ``meta``-device skeleton: :func:`basin.skeleton.check_config_fits_weights`).
    """
    validate_config(directory)
    fmt, files = weight_files(CheckpointSource.from_path(directory))
    if fmt == "bin":
        load_state_dict(CheckpointSource.from_path(directory))
    else:
        for f in files:
            validate_safetensors(f)
    check_config_fits_weights(directory, tensor_meta(CheckpointSource.from_path(directory)))
    return files


def checkpoint_digest(weights: list[Path], config: Path) -> str:
    """sha256 hex over the weight files (sorted by name; ``name \\0 size \\0 bytes``) + config."""
    h = hashlib.sha256()
    for f in sorted(weights, key=lambda p: p.name):
        h.update(f.name.encode() + b"\0" + str(f.stat().st_size).encode() + b"\0")
        with open(f, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    h.update(b"config.json\0")
    h.update(config.read_bytes())
    return h.hexdigest()


def file_digest(path: Path) -> str:
    """sha256 hex of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def parameter_groups(meta: dict[str, tuple[tuple[int, ...], str]]) -> dict[str, Any]:
    """Summarise tensors by module: ``{tensors, parameters, groups, modules}``.

    ``groups`` aggregates by the first name component (``bert``, ``classifier``);
    ``modules`` by the first two (``bert.embeddings``, ``bert.encoder``), or one when
    the second is already the leaf (``classifier.weight`` → ``classifier``). Each
    entry: ``{name, tensors, parameters}`` with parameters = Σ prod(shape).
    """

    def agg(keyfn) -> list[dict[str, Any]]:
        acc: dict[str, list[int]] = {}
        for k, (shape, _) in meta.items():
            g = acc.setdefault(keyfn(k), [0, 0])
            g[0] += 1
            g[1] += math.prod(shape)
        return [{"name": n, "tensors": t, "parameters": p} for n, (t, p) in acc.items()]

    def two(k: str) -> str:
        parts = k.split(".")
        return ".".join(parts[:2]) if len(parts) > 2 else parts[0]

    return {
        "tensors": len(meta),
        "parameters": sum(math.prod(s) for s, _ in meta.values()),
        "groups": agg(lambda k: k.split(".")[0]),
        "modules": agg(two),
    }
