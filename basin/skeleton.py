"""Check a checkpoint's ``config.json`` against its weights without building the model.

A config declares a model; the weights hold tensors. When they disagree, building the
model from the config (what a worker does) can cost far more memory than the weights
suggest: a ``config.json`` declaring 10⁹ parameters next to 30 kB of weights is a few
bytes of upload and an out-of-memory worker. :func:`check_config_fits_weights` compares
the two before anything real is built:

1. cheap guards on the config alone: a layer / block count above the number of stored
   tensors, or an expert count above the number of stored parameters, cannot be honest
   (every layer has at least one tensor), and would make even an empty skeleton large;
2. the model skeleton is built on the ``meta`` device (shapes only, no memory for
   weights) with the class the config names (``architectures[0]``, else ``AutoModel``);
3. its parameters are compared with the weights' (names, shapes) from the headers:

   - the total parameter count the config declares must not exceed what is stored;
   - a tensor present in both must have the same shape;
   - a parameter the model declares must be stored, unless it is tied to another one
     (``named_parameters`` lists a tied pair once), or it is one of the model's
     ``_keys_to_ignore_on_load_missing``, or an unmatched stored tensor of the same
     shape can take its place (transformers' own load-time renaming: old ``gamma`` /
     ``beta`` names, a base-model prefix, GPT-NeoX's ``embed_out``...).

Buffers (position ids, masks) are never required: transformers builds them from the config.
Raises :class:`~basin.errors.CheckpointError` with a message naming the mismatch.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from basin.errors import CheckpointError

#: ``name → (shape, dtype)``, as :func:`basin.checkpoints.tensor_meta` gives it.
Meta = Mapping[str, tuple[tuple[int, ...], str]]

_COUNT_KEY = re.compile(r"^(?:num|n)_.*(layer|block|expert)s?$")
_SHOW = 5


def _human(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6), ("k", 10**3)):
        if n >= size:
            return f"{n / size:.1f}{unit} ({n:,})"
    return f"{n:,}"


def _int_fields(cfg: Any) -> dict[str, int]:
    """Every integer field of a config and its nested sub-configs (``text_config.num_layers``)."""
    out: dict[str, int] = {}

    def walk(d: Mapping[str, Any], prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, Mapping):
                walk(v, f"{prefix}{k}.")
            elif isinstance(v, int) and not isinstance(v, bool):
                out[f"{prefix}{k}"] = v

    walk(cfg.to_dict(), "")
    return out


def check_counts(cfg: Any, meta: Meta) -> None:
    """Refuse layer / block / expert counts the stored weights cannot hold (before any build)."""
    n_tensors = len(meta)
    n_params = sum(math.prod(s) for s, _ in meta.values())
    for key, value in _int_fields(cfg).items():
        m = _COUNT_KEY.match(key.rsplit(".", 1)[-1])
        if not m:
            continue
        limit, what = (n_params, "parameters") if m.group(1) == "expert" else (n_tensors, "tensors")
        if value > limit:
            raise CheckpointError(
                f"config.json does not match the weights: it declares {key} = {value:,}, but the "
                f"weights hold only {limit:,} {what}; upload the config.json that belongs to "
                "these weights"
            )


def _build(cfg: Any, torch: Any, transformers: Any) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    archs = getattr(cfg, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    try:
        with torch.device("meta"):
            if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
                model = cls(cfg)
            else:
                model = transformers.AutoModel.from_config(cfg)
    except Exception as e:  # an architecture transformers cannot build from this config
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"config.json does not describe a model transformers can build: {msg}") from None
    params = {k: tuple(p.shape) for k, p in model.named_parameters()}
    ignore: set[str] = set()
    patterns = [re.compile(p) for p in (getattr(model, "_keys_to_ignore_on_load_missing", None) or [])]
    for k in params:
        if any(p.search(k) for p in patterns):
            ignore.add(k)
    return params, ignore


def _align(params: Mapping[str, tuple[int, ...]], stored: Meta, prefix: str) -> dict[str, str]:
    """Model name → stored name: same name, or the stored name with/without ``prefix.``."""
    out: dict[str, str] = {}
    for k in params:
        if k in stored:
            out[k] = k
        elif prefix and k.startswith(prefix + ".") and k[len(prefix) + 1 :] in stored:
            out[k] = k[len(prefix) + 1 :]
        elif prefix and f"{prefix}.{k}" in stored:
            out[k] = f"{prefix}.{k}"
    return out


def check_config_fits_weights(config_dir: Path, meta: Meta) -> None:
    """Refuse (:class:`CheckpointError`) a ``config.json`` whose model does not fit ``meta``."""
    import torch
    import transformers

    try:
        cfg = transformers.AutoConfig.from_pretrained(
            str(config_dir), local_files_only=True, trust_remote_code=False
        )
    except Exception as e:  # transformers raises many types for bad configs
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"config.json does not load with transformers: {msg}") from None
    check_counts(cfg, meta)
    params, ignore = _build(cfg, torch, transformers)

    declared = sum(math.prod(s) for s in params.values())
    stored_total = sum(math.prod(s) for s, _ in meta.values())
    problems = []
    if declared > stored_total:
        problems.append(
            f"it declares a model of {_human(declared)} parameters, but the weights hold "
            f"{_human(stored_total)}"
        )

    archs = getattr(cfg, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    prefix = str(getattr(cls, "base_model_prefix", "") or "")
    matched = _align(params, meta, prefix)

    wrong = [
        f"{k} is {list(params[k])} in the config, {list(meta[s][0])} in the weights"
        for k, s in matched.items()
        if tuple(meta[s][0]) != params[k]
    ]
    if wrong:
        problems.append(f"{len(wrong)} tensor(s) differ in shape: " + "; ".join(wrong[:_SHOW]))

    missing = [k for k in params if k not in matched and k not in ignore]
    if missing:
        # a stored tensor under another name with the same shape: transformers renames on load
        spare = Counter(tuple(meta[s][0]) for s in set(meta) - set(matched.values()))
        left = []
        for k in missing:
            if spare[params[k]] > 0:
                spare[params[k]] -= 1
            else:
                left.append(k)
        if left:
            shown = ", ".join(f"{k} {list(params[k])}" for k in left[:_SHOW])
            problems.append(f"the weights lack {len(left)} parameter(s) the config declares: {shown}")
    if problems:
        raise CheckpointError(
            "config.json does not match the weights: "
            + "; ".join(problems)
            + "; upload the config.json that belongs to these weights"
        )


__all__ = ["check_config_fits_weights", "check_counts"]
