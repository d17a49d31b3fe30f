"""Untrusted third-party configs, checked in one place before any library reads them.

A PEFT adapter's ``adapter_config.json`` comes from whoever uploaded it, and ``peft``
interprets its fields: some as Python regular expressions (a string ``target_modules``,
``exclude_modules``, ``layers_pattern``, the keys of ``rank_pattern`` / ``alpha_pattern``,
the entries of ``modules_to_save``), some as sizes it allocates before comparing any shape
(``r``, ``decompose_factor``, …), and some as paths it loads files from (X-LoRA's
``adapters``, CorDA / EVA / LoftQ initialisation files). So nothing of such a file reaches
``peft`` unchecked:

- **an allow-list of adapter types** (:data:`ADAPTER_TYPES`: LoRA, IA³, LoHa, LoKr, and the
  prompt-learning prompt tuning and prefix tuning, :data:`PROMPT_LEARNING`) and,
  per type, **an allow-list of fields**, each with its type and bounds. Fields ``peft``
  writes with their defaults (``megatron_config: null``, ``loftq_config: {}``, …) are
  accepted only at a default value and dropped; any other field, known or not, is refused
  by name;
- **no pattern from the file reaches Python's regex engine**: every module name
  (``target_modules``, ``exclude_modules``, ``modules_to_save``, ``feedforward_modules``,
  ``layers_pattern``, the keys of ``rank_pattern`` / ``alpha_pattern``) must be a literal
  module path (letters, digits, ``_``, dots between parts); a string ``target_modules``
  (which ``peft`` runs with ``re.fullmatch``) is refused — list the module names instead;
- **sizes are checked against what is stored**, before anything is built: every rank must
  fit the layer it adapts (at most the smaller side of its weight), and a LoRA / LoHa
  rank must equal the rank of the tensors the adapter stores for that layer (read from
  the safetensors header: no tensor is allocated); a prompt-learning adapter's hidden size,
  layer and head counts must be the base's, and its stored ``prompt_embeddings`` table
  exactly the shape they give (at most :data:`MAX_VIRTUAL_TOKENS` virtual tokens; a
  ``TEXT`` initialisation is read but built as ``RANDOM``, so peft loads no tokenizer).

:func:`clean_adapter_config` does the type- and field-level checks (no model needed);
:func:`check_adapter_shapes` the size checks on a ``meta``-device skeleton of the base.
``basin.adapters`` builds ``peft``'s config object only from the cleaned dict. The
injection by ``peft`` that follows runs, on the API's side, in a process with CPU, memory
and time limits (:mod:`basin.sandbox`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from basin import strict_json
from basin.errors import CheckpointError

if TYPE_CHECKING:
    from torch import nn

ADAPTER_CONFIG = "adapter_config.json"
#: the largest ``adapter_config.json`` read (peft writes about 1 KB)
MAX_CONFIG_BYTES = 256 * 1024
#: module names: a literal module path (``query``, ``attention.self.query``, ``h.0.attn``)
_NAME = re.compile(r"[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*")
MAX_NAME_CHARS = 200
MAX_NAMES = 512
MAX_LAYERS = 4096
#: the adapter types Basin takes: their tensors live in the base's own modules, their sizes
#: follow from the layer they adapt, and ``peft`` reads no file for them
ADAPTER_TYPES = ("LORA", "IA3", "LOHA", "LOKR", "PROMPT_TUNING", "PREFIX_TUNING")
#: prompt-learning types: a table of virtual tokens (prompt tuning: input embeddings; prefix
#: tuning: every layer's keys and values) outside the base's modules, sized by the base's
#: hidden size and layer count; on paths they live in adapter space only (no merged weights)
PROMPT_LEARNING = ("PROMPT_TUNING", "PREFIX_TUNING")
#: the most virtual tokens a prompt-learning adapter may declare (peft's examples use 8–100)
MAX_VIRTUAL_TOKENS = 1024
TASK_TYPES = (
    "SEQ_CLS",
    "CAUSAL_LM",
    "SEQ_2_SEQ_LM",
    "TOKEN_CLS",
    "QUESTION_ANS",
    "FEATURE_EXTRACTION",
)
#: fields only accepted at a "nothing to do" value, then dropped (peft writes them all)
_INERT = object()


def _fail(ptype: str, msg: str) -> CheckpointError:
    return CheckpointError(f"{ADAPTER_CONFIG} ({ptype}): {msg}")


def _short(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 80 else s[:77] + "..."


# ---- field checkers: (ptype, field, value) -> cleaned value, or CheckpointError


def _bool(p: str, k: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise _fail(p, f"{k} must be true or false, not {_short(v)}")
    return v


def _number(lo: float, hi: float, *, integer: bool = False):
    def check(p: str, k: str, v: Any) -> float | int:
        ok = isinstance(v, int) if integer else isinstance(v, int | float)
        if (
            isinstance(v, bool)
            or not ok
            or (isinstance(v, float) and not math.isfinite(v))
            or not lo <= v <= hi
        ):
            kind = "an integer" if integer else "a finite number"
            raise _fail(p, f"{k} must be {kind} in [{lo:g}, {hi:g}], not {_short(v)}")
        return v

    return check


def _choice(*options: Any):
    def check(p: str, k: str, v: Any) -> Any:
        if not any(v == o and type(v) is type(o) for o in options):
            raise _fail(
                p,
                f"{k} must be one of {', '.join(json.dumps(o) for o in options)}, not {_short(v)}",
            )
        return v

    return check


def _name(p: str, k: str, v: Any) -> str:
    if not isinstance(v, str) or len(v) > MAX_NAME_CHARS or not _NAME.fullmatch(v):
        raise _fail(
            p,
            f"{k}: {_short(v)} is not a module name (letters, digits and '_', parts joined by '.', "
            f"at most {MAX_NAME_CHARS} characters): Basin matches module names literally and runs no "
            "pattern from an uploaded file",
        )
    return v


def _names(p: str, k: str, v: Any) -> list[str] | None:
    if v is None:
        return None
    if isinstance(v, str):
        raise _fail(
            p,
            f"{k} is a string ({_short(v)}), which peft runs as a regular expression: give the list "
            'of module names instead, e.g. ["query", "value"]',
        )
    if not isinstance(v, list) or len(v) > MAX_NAMES:
        raise _fail(p, f"{k} must be a list of at most {MAX_NAMES} module names, not {_short(v)}")
    return [_name(p, k, x) for x in v]


def _layers(p: str, k: str, v: Any) -> int | list[int] | None:
    if v is None:
        return None
    one = _number(0, MAX_LAYERS, integer=True)
    if isinstance(v, list):
        if len(v) > MAX_LAYERS:
            raise _fail(p, f"{k} lists more than {MAX_LAYERS} layers")
        return [int(one(p, k, x)) for x in v]
    return int(one(p, k, v))


def _layers_pattern(p: str, k: str, v: Any) -> str | list[str] | None:
    if v is None:
        return None
    if isinstance(v, list):
        if len(v) > 16:
            raise _fail(p, f"{k} lists more than 16 names")
        return [_ident(p, k, x) for x in v]
    return _ident(p, k, v)


def _ident(p: str, k: str, v: Any) -> str:
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", v):
        raise _fail(
            p,
            f"{k}: {_short(v)} is not the name of a layer list (an identifier such as 'layer' or 'h')",
        )
    return v


def _pattern_map(value_check):
    def check(p: str, k: str, v: Any) -> dict[str, Any]:
        if not isinstance(v, dict) or len(v) > MAX_NAMES:
            raise _fail(
                p, f"{k} must be an object of at most {MAX_NAMES} module names, not {_short(v)}"
            )
        return {_name(p, k, name): value_check(p, f"{k}[{name!r}]", x) for name, x in v.items()}

    return check


def _opt(check):
    return lambda p, k, v: None if v is None else check(p, k, v)


def _text(limit: int):
    def check(p: str, k: str, v: Any) -> str | None:
        if v is not None and (
            not isinstance(v, str) or len(v) > limit or any(ord(c) < 32 for c in v)
        ):
            raise _fail(p, f"{k} must be a line of text of at most {limit} characters")
        return v

    return check


_RANK = _number(1, 1 << 20, integer=True)
_ALPHA = _number(-1e6, 1e6)
_P = _number(0.0, 1.0)

COMMON: dict[str, Any] = {
    "peft_type": None,  # checked first
    "task_type": _opt(_choice(*TASK_TYPES)),
    "base_model_name_or_path": _text(1000),
    "revision": _text(200),
    "inference_mode": _bool,
    "peft_version": _text(100),
    "auto_mapping": _INERT,
}

FIELDS: dict[str, dict[str, Any]] = {
    "LORA": {
        "r": _RANK,
        "target_modules": _names,
        "exclude_modules": _names,
        "lora_alpha": _ALPHA,
        "lora_dropout": _P,
        "fan_in_fan_out": _bool,
        "bias": _choice("none", "all", "lora_only"),
        "use_rslora": _bool,
        "modules_to_save": _names,
        "init_lora_weights": _choice(True, False, "gaussian"),
        "layers_to_transform": _layers,
        "layers_pattern": _layers_pattern,
        "rank_pattern": _pattern_map(_RANK),
        "alpha_pattern": _pattern_map(_ALPHA),
        "use_dora": _bool,
        "lora_bias": _bool,
        "megatron_config": _INERT,
        "megatron_core": _INERT,
        "trainable_token_indices": _INERT,
        "loftq_config": _INERT,
        "eva_config": _INERT,
        "corda_config": _INERT,
        "lora_ga_config": _INERT,
        "velora_config": _INERT,
        "alora_invocation_tokens": _INERT,
        "use_qalora": _INERT,
        "qalora_group_size": _INERT,
        "monteclora_config": _INERT,
        "layer_replication": _INERT,
        "runtime_config": _INERT,
        "target_parameters": _INERT,
        "use_bdlora": _INERT,
        "arrow_config": _INERT,
        "kasa_config": _INERT,
        "ensure_weight_tying": _INERT,
    },
    "IA3": {
        "target_modules": _names,
        "exclude_modules": _names,
        "feedforward_modules": _names,
        "fan_in_fan_out": _bool,
        "modules_to_save": _names,
        "init_ia3_weights": _bool,
    },
    "LOHA": {
        "r": _RANK,
        "alpha": _ALPHA,
        "rank_pattern": _pattern_map(_RANK),
        "alpha_pattern": _pattern_map(_ALPHA),
        "rank_dropout": _P,
        "module_dropout": _P,
        "use_effective_conv2d": _bool,
        "target_modules": _names,
        "exclude_modules": _names,
        "init_weights": _bool,
        "layers_to_transform": _layers,
        "layers_pattern": _layers_pattern,
        "modules_to_save": _names,
    },
}
_PROMPT_COMMON: dict[str, Any] = {
    "num_virtual_tokens": _number(1, MAX_VIRTUAL_TOKENS, integer=True),
    "token_dim": _opt(_number(1, 1 << 16, integer=True)),
    "num_transformer_submodules": _opt(_choice(1, 2)),
    "num_attention_heads": _opt(_number(1, 1 << 12, integer=True)),
    "num_layers": _opt(_number(1, MAX_LAYERS, integer=True)),
    "modules_to_save": _names,
}
FIELDS["PROMPT_TUNING"] = {
    **_PROMPT_COMMON,
    # how the table was initialised before training: read (the stored table replaces it), then
    # built as RANDOM, so peft never loads the tokenizer a TEXT init names
    "prompt_tuning_init": _choice("RANDOM", "TEXT", "SAMPLE_VOCAB"),
    "prompt_tuning_init_text": _text(10000),
    "tokenizer_name_or_path": _text(1000),
    "tokenizer_kwargs": _INERT,
}
FIELDS["PREFIX_TUNING"] = {
    **_PROMPT_COMMON,
    "encoder_hidden_size": _opt(_number(1, 1 << 16, integer=True)),
    "prefix_projection": _choice(False),
}
#: fields read, then left out of what peft gets (initialisation only; the stored table wins)
_DROPPED = {"prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None, "tokenizer_name_or_path": None}
FIELDS["LOKR"] = {
    **FIELDS["LOHA"],
    "decompose_both": _bool,
    "decompose_factor": _number(-1, 1 << 20, integer=True),
    "rank_dropout_scale": _bool,
}
#: values an inert field may have: peft's defaults ("nothing to do")
_INERT_OK: dict[str, tuple[Any, ...]] = {
    "megatron_core": ("megatron.core",),
    "qalora_group_size": (16,),
    "runtime_config": ({"ephemeral_gpu_offload": False},),
}


def _is_nothing(v: Any) -> bool:
    return v is None or v is False or v == {} or v == [] or v == ""


def read_untrusted_json(path: Path, what: str = ADAPTER_CONFIG) -> Any:
    """A JSON file of at most :data:`MAX_CONFIG_BYTES`, parsed; :class:`CheckpointError` when it
    is larger, not JSON, or nested too deeply for the parser."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise CheckpointError(f"no {what} in the adapter folder {path.parent.name}") from None
    except OSError as e:
        raise CheckpointError(f"{what} is not readable: {e.strerror or e}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise CheckpointError(
            f"{what} is larger than {MAX_CONFIG_BYTES // 1024} KiB (peft writes about 1 KiB)"
        )
    try:
        return strict_json.loads(data)  # finite numbers, bounded nesting
    except RecursionError:
        raise CheckpointError(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{what} is not readable JSON: {e}") from None


def clean_adapter_config(raw: Any) -> dict[str, Any]:
    """The fields of an ``adapter_config.json`` Basin passes to ``peft``, checked.

    Refuses (:class:`CheckpointError`, naming the field) a type outside
    :data:`ADAPTER_TYPES`, a field outside the type's allow-list, a value of the wrong type
    or out of bounds, a module name that is not a literal name. Fields ``peft`` writes at
    their defaults are dropped. The result holds ``peft_type`` and only allowed fields.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("peft_type"), str):
        raise CheckpointError(f"{ADAPTER_CONFIG} has no peft_type: it is not a PEFT adapter config")
    ptype = raw["peft_type"]
    if ptype not in FIELDS:
        shown = (
            ptype
            if len(ptype) <= 40 and ptype.isprintable()
            else ptype[:40].encode("unicode_escape").decode()
        )
        raise CheckpointError(
            f"{ADAPTER_CONFIG}: peft_type {shown!r} is not one Basin takes (it takes "
            f"{', '.join(ADAPTER_TYPES)}: adapters whose tensors live in the base model's own layers, and "
            "prompt learning's table of virtual tokens; other types load files or build layers Basin does not check)"
        )
    allowed = {**COMMON, **FIELDS[ptype]}
    out: dict[str, Any] = {"peft_type": ptype}
    for k, v in raw.items():
        if k == "peft_type":
            continue
        check = allowed.get(k)
        if check is _INERT or (check is None and isinstance(k, str) and len(k) <= 64):
            if not _is_nothing(v) and v not in _INERT_OK.get(k, ()):
                why = (
                    "is not a field Basin accepts"
                    if check is None
                    else "is only accepted at its default (null)"
                )
                raise _fail(ptype, f"field {k!r} {why}: refused so that peft never acts on it")
            continue
        if check is None:
            raise _fail(ptype, f"field {_short(k)} is not a field Basin accepts")
        out[k] = check(ptype, k, v)
    if ptype in PROMPT_LEARNING:
        if "num_virtual_tokens" not in out:
            raise _fail(ptype, "num_virtual_tokens is missing")
        for k, v in _DROPPED.items():
            if k in out:
                if v is None:
                    del out[k]
                else:
                    out[k] = v
        return out
    if out.get("target_modules") is None:
        raise _fail(ptype, "target_modules is missing: list the module names the adapter adapts")
    ff = out.get("feedforward_modules")
    if ff and not set(ff) <= set(out["target_modules"]):
        raise _fail(ptype, "feedforward_modules must be a subset of target_modules")
    if out.get("layers_pattern") is not None and out.get("layers_to_transform") is None:
        raise _fail(ptype, "layers_pattern is only used with layers_to_transform")
    return out


def _suffix(name: str, key: str) -> bool:
    return name == key or name.endswith("." + key)


def _shape_of(module: nn.Module) -> tuple[int, ...] | None:
    w = getattr(module, "weight", None)
    shape = getattr(w, "shape", None)
    return tuple(int(s) for s in shape) if shape is not None and len(shape) >= 2 else None


def check_adapter_shapes(
    clean: Mapping[str, Any],
    stored: Mapping[str, tuple[int, ...]],
    skeleton: nn.Module,
    where: str = "the base",
) -> None:
    """Sizes of a cleaned config against the base's layers and the adapter's stored tensors.

    ``stored``: the adapter's tensor shapes (from the safetensors header); ``skeleton``: the
    base's architecture on the ``meta`` device (no weights). Before ``peft`` allocates
    anything: every target module is a layer of the base; every rank (``r``, each
    ``rank_pattern`` value) is at most the smaller side of the weight of every layer it
    applies to; for LoRA and LoHa each adapted layer's stored tensors have exactly the rank
    the config gives it; a LoKr ``decompose_factor`` is at most the layer's larger side.
    """
    ptype = clean["peft_type"]
    modules = {n: m for n, m in skeleton.named_modules() if n}
    if ptype in PROMPT_LEARNING:
        _check_prompt_shapes(clean, stored, skeleton, modules, where)
        return
    targets = clean["target_modules"]
    absent = sorted(t for t in targets if not any(_suffix(n, t) for n in modules))  # a stable message
    if absent:
        leaves = sorted(
            {
                n.rsplit(".", 1)[-1]
                for n, m in modules.items()
                if not any(True for _ in m.children())
            }
        )
        raise CheckpointError(
            f"the adapter (peft_type {ptype}): target module(s) {absent} are not in {where} (a "
            f"{type(skeleton).__name__}; its layers are named e.g. {', '.join(leaves[:12])})"
        )
    if "r" not in clean and not clean.get("rank_pattern") and "decompose_factor" not in clean:
        return
    r_default = int(clean.get("r", 8))
    patterns = clean.get("rank_pattern") or {}
    for key in patterns:
        if not any(_suffix(n, key) for n in modules):
            raise CheckpointError(
                f"the adapter (peft_type {ptype}): rank_pattern names {key!r}, not a module of {where}"
            )
    rank_of = {  # peft's stored rank tensor of a layer: LoRA A is [r, in], LoHa w1_b is [r, in]
        "LORA": ("lora_A.weight", "lora_embedding_A"),
        "LOHA": ("hada_w1_b",),
    }.get(ptype, ())
    for name, mod in modules.items():
        if not any(_suffix(name, t) for t in targets):
            continue
        shape = _shape_of(mod)
        if shape is None:
            continue
        key = next((k for k in patterns if _suffix(name, k)), None)
        r = int(patterns[key]) if key is not None else r_default
        side = min(shape[:2])
        if ptype != "LOKR" and r > side:
            raise CheckpointError(
                f"the adapter (peft_type {ptype}): rank {r} for {name} is larger than the layer it adapts "
                f"({'×'.join(map(str, shape))}); its rank can be at most {side}"
            )
        if ptype == "LOKR":
            factor = int(clean.get("decompose_factor", -1))
            if factor > max(shape) or r > max(shape):
                raise CheckpointError(
                    f"the adapter (peft_type LOKR): rank {r} / decompose_factor {factor} for {name} is larger "
                    f"than the layer it adapts ({'×'.join(map(str, shape))})"
                )
        for suffix in rank_of:
            hits = [
                s
                for k, s in stored.items()
                if k.endswith(f".{name}.{suffix}") or k.endswith(f".{name}.{suffix}.default")
            ]
            for s in hits:
                if not s or s[0] != r:
                    raise CheckpointError(
                        f"the adapter (peft_type {ptype}): its config gives {name} rank {r}, but the stored "
                        f"tensor {name}.{suffix} has shape {list(s)}"
                    )


def _check_prompt_shapes(
    clean: Mapping[str, Any],
    stored: Mapping[str, tuple[int, ...]],
    skeleton: nn.Module,
    modules: Mapping[str, nn.Module],
    where: str,
) -> None:
    """A prompt-learning config against the base's sizes and the stored virtual-token table."""
    ptype = clean["peft_type"]
    cfg = getattr(skeleton, "config", None)
    base = {
        "token_dim": getattr(cfg, "hidden_size", None),
        "num_layers": getattr(cfg, "num_hidden_layers", None),
        "num_attention_heads": getattr(cfg, "num_attention_heads", None),
    }
    size: dict[str, int] = {}
    for k, v in base.items():
        given = clean.get(k)
        if given is not None and v is not None and int(given) != int(v):
            raise CheckpointError(
                f"the adapter (peft_type {ptype}): its config gives {k} = {given}, but {where} has {v}"
            )
        got = given if given is not None else v
        if got is None:
            raise CheckpointError(f"the adapter (peft_type {ptype}): {k} is not given and {where} does not say it")
        size[k] = int(got)
    sub = int(clean.get("num_transformer_submodules") or (2 if getattr(cfg, "is_encoder_decoder", False) else 1))
    rows = int(clean["num_virtual_tokens"]) * sub
    cols = size["token_dim"] * (2 * size["num_layers"] if ptype == "PREFIX_TUNING" else 1)
    table = stored.get("prompt_embeddings")
    if table is None:
        raise CheckpointError(f"the adapter (peft_type {ptype}) stores no prompt_embeddings table")
    if tuple(table) != (rows, cols):
        raise CheckpointError(
            f"the adapter (peft_type {ptype}): its prompt_embeddings table has shape {list(table)}, but its config "
            f"on {where} makes it [{rows}, {cols}] (virtual tokens × submodules, "
            + ("2 × layers × hidden size]" if ptype == "PREFIX_TUNING" else "hidden size]")
        )
    for name in clean.get("modules_to_save") or []:
        if not any(_suffix(n, name) for n in modules) and name not in ("classifier", "score"):
            raise CheckpointError(f"the adapter (peft_type {ptype}): modules_to_save names {name!r}, not a module of {where}")


__all__ = [
    "PROMPT_LEARNING",
    "ADAPTER_TYPES",
    "FIELDS",
    "check_adapter_shapes",
    "clean_adapter_config",
    "read_untrusted_json",
]
