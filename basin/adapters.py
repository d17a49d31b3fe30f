"""PEFT adapters (LoRA, IA³, LoHa, LoKr, …) on a base checkpoint: reading, checking, merging.

An adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` (or
``adapter_model.bin``, read only with ``torch.load(weights_only=True)``), as ``peft``'s
``save_pretrained`` writes them. A :class:`basin.resolve.CheckpointSource` with
``adapter`` set names such a folder together with its base model (``weights`` /
``config_dir`` are the base's). The ``peft`` library does the adapter work: it builds
the adapter's modules on the base (:func:`peft.get_peft_model`), maps the stored tensor
names onto them (:func:`peft.set_peft_model_state_dict`) and merges
(``merge_and_unload``); nothing here re-implements an adapter's arithmetic.

Two spaces a path can walk through (``RunSpec.space``):

- ``merged`` (default): an adapter checkpoint *is* its merged weights θ_base + ΔW.
  :func:`merged_state_dict` materialises them under the base's stored tensor names, so
  every path type works unchanged and a full fine-tuned checkpoint can share a path
  with an adapter on the same base.
- ``adapter``: the live model is the base with the adapter's modules injected and the
  path mixes the adapter's own tensors — the parameters ``peft`` makes trainable (for
  LoRA: ``lora_A``, ``lora_B`` and ``modules_to_save`` copies such as a classifier
  head). :class:`AdapterSpace` builds that model and reads each adapter into it.

Prompt-learning adapters (prompt tuning, prefix tuning) have no weights inside the base
model's modules, so they have no merged weights: they live on ``adapter``-space paths only,
where the live model is ``peft``'s own model (it prepends the virtual tokens); in
``merged`` space they are refused with :class:`CheckpointError`. (P-tuning's prompt
encoder is a network of its own and is not taken.)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from basin.errors import CheckpointError, IncompatibleCheckpoints
from basin.formats import bin_meta, load_bin, read_config, safetensors_meta
from basin.tasks import TASKS

if TYPE_CHECKING:
    from torch import nn

    from basin.sandbox import Limits
    from basin.source import CheckpointSource

logger = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_SAFE = "adapter_model.safetensors"
ADAPTER_BIN = "adapter_model.bin"
#: peft's ``task_type`` → the Basin task whose model class an adapter was trained on.
TASK_OF_PEFT: dict[str, str] = {}
for _t, _e in TASKS.items():  # the first task (in order) that claims a PEFT task type
    for _p in _e.peft_task_types:
        TASK_OF_PEFT.setdefault(_p, _t)


def is_adapter_dir(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding ``adapter_config.json``."""
    p = Path(path)
    return p.is_dir() and (p / ADAPTER_CONFIG).is_file()


def read_adapter_config(directory: str | Path) -> dict[str, Any]:
    """``adapter_config.json`` as a dict (read bounded, :func:`basin.untrusted.read_untrusted_json`);
    :class:`CheckpointError` when unreadable or not peft's. Unchecked: pass it through
    :func:`basin.untrusted.clean_adapter_config` before anything acts on it."""
    from basin.untrusted import read_untrusted_json

    cfg = read_untrusted_json(Path(directory) / ADAPTER_CONFIG)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("peft_type"), str):
        raise CheckpointError(f"{ADAPTER_CONFIG} has no peft_type: it is not a PEFT adapter config")
    return cfg


def clean_config(directory: str | Path) -> dict[str, Any]:
    """The adapter's config, checked field by field (:func:`basin.untrusted.clean_adapter_config`)."""
    from basin.untrusted import clean_adapter_config

    return clean_adapter_config(read_adapter_config(directory))


def peft_config(directory: str | Path, config_dir: str | Path | None = None) -> Any:
    """The ``peft`` config object of an adapter folder, built only from its checked fields.

    The config passes :func:`basin.untrusted.clean_adapter_config` (allow-listed types and
    fields, literal module names, bounded values); with ``config_dir`` (the base's folder)
    its sizes are also checked against the base's layers and the adapter's stored tensors
    (:func:`basin.untrusted.check_adapter_shapes`, on a ``meta`` skeleton) before ``peft``
    builds anything. :class:`CheckpointError` names what is refused.
    """
    clean = clean_config(directory)
    if config_dir is not None:
        check_shapes(directory, Path(config_dir), clean)
    return config_object(clean)


def config_object(clean: Mapping[str, Any]) -> Any:
    """``peft``'s config object from a config already passed through
    :func:`basin.untrusted.clean_adapter_config` (and, where it matters, its shape checks)."""
    import peft
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    kwargs = {k: v for k, v in clean.items() if k not in ("peft_type", "peft_version", "revision")}
    try:
        cfg = PEFT_TYPE_TO_CONFIG_MAPPING[peft.PeftType[clean["peft_type"]]](**kwargs)
    except Exception as e:  # peft raises TypeError/ValueError/… for configs it cannot read
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{ADAPTER_CONFIG} does not load with peft: {msg}") from None
    return cfg


def check_shapes(directory: str | Path, config_dir: Path, clean: dict[str, Any] | None = None,
                 where: str = "its base model") -> dict[str, Any]:
    """Check a cleaned adapter config's sizes against the base (a ``meta`` skeleton built from
    ``config_dir``) and the adapter's stored tensor shapes (header only); returns the config."""
    from basin.untrusted import check_adapter_shapes

    clean = clean if clean is not None else clean_config(directory)
    skeleton = _build_base(config_dir, TASK_OF_PEFT.get(str(clean.get("task_type"))), meta=True)
    stored = {k: v[0] for k, v in adapter_meta(directory).items()}
    check_adapter_shapes(clean, stored, skeleton, where)
    return clean


def adapter_weight_file(directory: str | Path) -> Path:
    """The adapter's weight file: ``adapter_model.safetensors`` or ``adapter_model.bin``."""
    d = Path(directory)
    for name in (ADAPTER_SAFE, ADAPTER_BIN):
        if (d / name).is_file():
            return d / name
    raise CheckpointError(f"the adapter folder holds no weights ({ADAPTER_SAFE} or {ADAPTER_BIN})")


def load_adapter_weights(directory: str | Path) -> dict[str, torch.Tensor]:
    """The adapter's stored tensors (CPU; safetensors, or a ``.bin`` read with ``weights_only``)."""
    from safetensors.torch import load_file

    f = adapter_weight_file(directory)
    if f.suffix == ".bin":
        out = load_bin(f)
    else:
        try:
            out = load_file(str(f), device="cpu")
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"cannot read {f.name}: {e}") from None
    if not out:
        raise CheckpointError(f"{f.name} holds no tensors")
    return out


def adapter_meta(directory: str | Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shapes and dtypes of the adapter's tensors (safetensors: header only)."""
    f = adapter_weight_file(directory)
    return bin_meta(f) if f.suffix == ".bin" else safetensors_meta(f)


def model_class(config: Mapping[str, Any], task: str | None = None) -> Any:
    """The ``transformers`` class to build a base for an adapter: the base's own architecture
    (``config.architectures[0]``), else the auto class of ``task``."""
    import transformers

    from basin.space import TASK_AUTO_CLASSES

    archs = config.get("architectures") or []
    cls = getattr(transformers, archs[0], None) if archs else None
    if cls is not None:
        return cls
    return getattr(transformers, TASK_AUTO_CLASSES.get(task or "", "AutoModel"), transformers.AutoModel)


def _build_base(config_dir: Path, task: str | None, *, meta: bool) -> nn.Module:
    import transformers

    raw = read_config(config_dir)
    cls = model_class(raw, task)
    try:
        config = transformers.AutoConfig.from_pretrained(str(config_dir))
        if meta:
            with torch.device("meta"):
                model = cls._from_config(config) if hasattr(cls, "_from_config") else cls.from_config(config)
        else:
            model = cls._from_config(config) if hasattr(cls, "_from_config") else cls.from_config(config)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"cannot build the base model from {config_dir.name}/config.json: {e}") from None
    model = model.float() if not meta else model
    model.eval()
    model.requires_grad_(False)
    return model


def _ptype(cfg: Any) -> str:
    t = getattr(cfg, "peft_type", "")
    return str(getattr(t, "value", t))


def _inject(model: nn.Module, cfg: Any, what: str, where: str = "its base model") -> Any:
    """``peft.get_peft_model`` with its 'target modules not found' errors made readable."""
    import copy

    import peft

    cfg = copy.deepcopy(cfg)
    cfg.inference_mode = False  # peft then marks exactly the adapter's own tensors trainable
    model.requires_grad_(True)
    try:
        pm = peft.get_peft_model(model, cfg)
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{what} does not fit {where}: {msg}") from None
    enable_prefix(pm)  # a prefix adapter on a BERT-like encoder (transformers 5 names the cache ``cache``)
    return pm


def enable_prefix(peft_model: Any) -> bool:
    """Let peft's prefix tuning reach an encoder whose forward names its key/value cache ``cache``.

    peft 0.21 looks for a ``past_key_values`` parameter on the model (a classifier: on its
    backbone, ``BertModel``) and refuses prefix tuning without one; transformers 5 renamed it
    ``cache`` (``past_key_values`` is still accepted, deprecated until 5.40). This gives the
    backbone's ``forward`` a signature that names ``past_key_values`` too (the call is
    unchanged), so peft passes the prefix's keys and values, which each self-attention layer
    prepends — as prefix tuning on BERT did with transformers 4 (positions also start after
    the prefix, as they did there). Returns whether it changed anything. Call it on every
    model that runs a prefix adapter on such an encoder (training, reloading).
    """
    import inspect

    name = getattr(peft_model, "transformer_backbone_name", None)
    cfg = getattr(peft_model, "active_peft_config", None)
    if not name or str(getattr(cfg, "peft_type", "")).rsplit(".", 1)[-1] != "PREFIX_TUNING":
        return False
    backbone = peft_model.base_model.get_submodule(name)
    fwd = backbone.forward
    sig = inspect.signature(fwd)
    if "past_key_values" in sig.parameters or "cache" not in sig.parameters:
        return False
    params = list(sig.parameters.values())
    at = next(
        (i for i, p in enumerate(params) if p.kind is inspect.Parameter.VAR_KEYWORD), len(params)
    )
    params.insert(
        at, inspect.Parameter("past_key_values", inspect.Parameter.KEYWORD_ONLY, default=None)
    )

    def forward(*args: Any, **kwargs: Any) -> Any:
        return fwd(*args, **kwargs)

    forward.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    backbone.forward = forward
    return True


@dataclass
class AdapterInfo:
    """What a manifest records about an adapter (cheap: config and header only)."""

    peft_type: str
    task_type: str | None
    base_model_name_or_path: str | None
    target_modules: list[str] | str | None
    modules_to_save: list[str] | None
    r: int | None
    num_parameters: int
    num_tensors: int
    dtype: str
    format: str
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect_adapter(directory: str | Path) -> AdapterInfo:
    """Describe an adapter folder without loading its weights (config + header)."""
    from collections import Counter

    raw = clean_config(directory)
    meta = adapter_meta(directory)
    counts: Counter[str] = Counter()
    n = 0
    for shape, dt in meta.values():
        k = 1
        for s in shape:
            k *= s
        n += k
        counts[dt] += k
    tm = raw.get("target_modules")
    return AdapterInfo(
        peft_type=raw["peft_type"], task_type=raw.get("task_type"),
        base_model_name_or_path=raw.get("base_model_name_or_path"),
        target_modules=sorted(tm) if isinstance(tm, list) else tm,
        modules_to_save=raw.get("modules_to_save"), r=raw.get("r"),
        num_parameters=n, num_tensors=len(meta), dtype=counts.most_common(1)[0][0] if counts else "unknown",
        format="safetensors" if adapter_weight_file(directory).suffix == ".safetensors" else "bin",
        config=raw,
    )


def validate_adapter(directory: str | Path, base: CheckpointSource, *, base_name: str | None = None,
                     limits: Limits | None = None, sandbox: bool = True) -> AdapterInfo:
    """Check that an adapter folder fits a base checkpoint, reading no weights.

    First, in this process and cheaply, the config's fields (:func:`clean_config`: an
    allow-list of types and fields, bounded values, literal module names) and the
    weights' header. Then, in a process with CPU, memory and time limits
    (:func:`basin.sandbox.run_limited`, ``limits``; ``sandbox=False`` runs it here),
    :func:`check_adapter_on_base`: the sizes against the base's layers and the stored
    tensors, then ``peft``'s injection on a ``meta`` skeleton of the base and the exact
    comparison of the tensors it expects with the stored ones
    (:class:`IncompatibleCheckpoints` names the mismatches).
    """
    from basin.sandbox import run_limited

    d = Path(directory)
    info = inspect_adapter(d)  # the config's checks and the header: no third-party code yet
    where = f"base {base_name or base.id[:12]!r}"
    kwargs = {"directory": str(d), "config_dir": str(base.config_dir), "where": where}
    if sandbox:
        run_limited("adapter", kwargs, limits, what=f"checking the adapter against {where}")
    else:
        check_adapter_on_base(**kwargs)
    return info


def check_adapter_on_base(directory: str, config_dir: str, where: str) -> int:
    """The adapter's sizes against its base, then ``peft``'s injection on a ``meta`` skeleton of
    the base and the exact comparison of expected and stored tensors. Returns the number of
    tensors; raises :class:`CheckpointError` / :class:`IncompatibleCheckpoints`.
    (The sandbox's ``adapter`` job: it runs ``peft`` on an untrusted config.)"""
    import peft

    d = Path(directory)
    clean = check_shapes(d, Path(config_dir), where=where)
    what = f"the adapter (peft_type {clean['peft_type']})"
    cfg = peft_config(d)
    skeleton = _build_base(Path(config_dir), TASK_OF_PEFT.get(str(clean.get("task_type"))), meta=True)
    pm = _inject(skeleton, cfg, what, where)
    try:
        if getattr(cfg, "is_prompt_learning", False):  # peft would run the (meta) prompt encoder to list it
            expected = {("prompt_embeddings" if "prompt_encoder." in n else n.replace(".modules_to_save.default", "")):
                        tuple(p.shape) for n, p in pm.named_parameters() if p.requires_grad}
        else:
            expected = {k: tuple(v.shape) for k, v in peft.get_peft_model_state_dict(pm).items()}
    except Exception as e:  # peft's own failures on odd configs
        raise CheckpointError(f"{what}: peft cannot list its tensors on {where}: {e}") from None
    stored = {k: v[0] for k, v in adapter_meta(d).items()}
    mismatches: list[tuple[str, str]] = []
    for k, shape in stored.items():
        if k not in expected:
            mismatches.append((k, f"stored in the adapter but {where} has no such adapter tensor"))
        elif expected[k] != shape:
            mismatches.append((k, f"shape {list(shape)} in the adapter vs {list(expected[k])} on {where}"))
    for k in expected:
        if k not in stored:
            mismatches.append((k, "missing from the adapter file"))
    if mismatches:
        head = "; ".join(f"{k}: {why}" for k, why in mismatches[:5])
        more = f" (and {len(mismatches) - 5} more)" if len(mismatches) > 5 else ""
        raise IncompatibleCheckpoints(
            f"the adapter does not fit {where} ({clean['peft_type']}, target modules {clean['target_modules']}): "
            f"{len(mismatches)} mismatched tensor(s): {head}{more}", mismatches)
    return len(stored)


def _set_adapter(pm: Any, weights: Mapping[str, torch.Tensor], names: Sequence[str], what: str) -> None:
    """Load an adapter's tensors into a peft model; every adapter tensor must be set."""
    import peft

    try:
        result = peft.set_peft_model_state_dict(pm, dict(weights))
    except (RuntimeError, KeyError) as e:  # size mismatches from load_state_dict; a tensor peft looks up
        raise IncompatibleCheckpoints(f"{what} does not fit the adapter layout of the path's first adapter: "
                                      f"{str(e).splitlines()[0]}", []) from None
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    wanted = set(names)
    missing = [k.removeprefix("base_model.model.") for k in (getattr(result, "missing_keys", []) or [])]
    missing = [k for k in missing if k in wanted]
    if "prompt_embeddings" in weights:  # peft loads the virtual-token table itself, by its role
        unexpected = [k for k in unexpected if k != "prompt_embeddings"]
        missing = [k for k in missing if not (k.startswith("prompt_encoder.") and k.endswith("embedding.weight"))]
    if unexpected or missing:
        bad = [(k, "not an adapter tensor of the path's first adapter") for k in unexpected]
        bad += [(k, f"missing from {what}") for k in missing]
        raise IncompatibleCheckpoints(
            f"{what} does not have the adapter layout of the path's first adapter (adapter space needs adapters "
            f"of one type, rank and target modules): {len(bad)} mismatched tensor(s), e.g. "
            f"{'; '.join(f'{k}: {w}' for k, w in bad[:3])}", bad)


def merged_state_dict(src: CheckpointSource, base_sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """θ_base + ΔW of an adapter source, under the base's stored tensor names (CPU, fp32).

    ``peft`` builds the adapter on the base (its own architecture, fp32), loads the stored
    adapter tensors and merges them (``merge_and_unload``); tensors the adapter does not
    touch come back as the base's.
    """
    from basin.space import key_mapper, load_weights, rename

    assert src.adapter is not None
    cfg = peft_config(src.adapter, src.config_dir)  # checked against the base before peft builds
    if getattr(cfg, "is_prompt_learning", False):
        raise CheckpointError(
            f"adapter {_label(src.adapter)} is {_ptype(cfg)}, prompt learning: its virtual tokens are no weights of "
            "the base model, so it has no merged checkpoint; put it on a path with space: adapter")
    task = TASK_OF_PEFT.get(str(getattr(cfg, "task_type", None)))
    model = _build_base(src.config_dir, task, meta=False)
    load_weights(model, rename(base_sd, key_mapper(model)(base_sd)))
    pm = _inject(model, cfg, "the adapter")
    names = [n.removeprefix("base_model.model.") for n, p in pm.named_parameters() if p.requires_grad]
    _set_adapter(pm, load_adapter_weights(src.adapter), names, f"adapter {src.adapter.name}")
    with torch.no_grad():
        merged = pm.merge_and_unload()
    live = merged.state_dict()
    to_model = key_mapper(merged)(base_sd)
    out = {}
    for k, t in base_sd.items():
        m = to_model.get(k, k)
        out[k] = live[m].detach().to(torch.float32).clone() if m in live else t
    return out


def moved_names(base_sd: Mapping[str, torch.Tensor], merged: Sequence[Mapping[str, torch.Tensor]]) -> set[str]:
    """Stored names of the tensors some merged adapter changes (differs from the base)."""
    out = set()
    for k, t in base_sd.items():
        if not t.is_floating_point():
            continue
        for sd in merged:
            if k in sd and not torch.equal(sd[k].to(t.dtype) if sd[k].dtype != t.dtype else sd[k], t):
                out.add(k)
                break
    return out


class AdapterSpace:
    """The live model of an ``adapter``-space path: the base with the first adapter's modules.

    :attr:`model` is the base ``transformers`` model with ``peft``'s adapter layers injected
    (forward is the base's own; the adapter is active); :attr:`names` are the adapter's
    own tensors in it — the parameters ``peft`` marks trainable. :meth:`load` reads an
    adapter into those tensors with ``peft`` and returns copies of them, leaving the live
    model as it was.
    """

    def __init__(self, model: nn.Module, first: CheckpointSource, base_sd: Mapping[str, torch.Tensor], task: str):
        from basin.space import key_mapper, load_weights, rename

        assert first.adapter is not None
        self.cfg = peft_config(first.adapter, first.config_dir)  # checked before peft builds
        self.base_id = (first.weights, first.config_dir)
        self.base = first.base_source()
        self.first = first.adapter
        load_weights(model, rename(base_sd, key_mapper(model)(base_sd)), task)
        self.peft_model = _inject(model, self.cfg, f"adapter {first.adapter.name}")
        if getattr(self.cfg, "is_prompt_learning", False):
            # the virtual tokens are prepended by peft's own forward: the live model is peft's
            self.model: nn.Module = self.peft_model
            self.names = [n for n, p in self.peft_model.named_parameters() if p.requires_grad]
        else:
            self.model = self.peft_model.get_base_model()
            self.names = [n.removeprefix("base_model.model.") for n, p in self.peft_model.named_parameters()
                          if p.requires_grad]
        self.model.requires_grad_(False)
        self.model.eval()
        if not self.names:
            raise CheckpointError(f"adapter {first.adapter.name} has no tensors of its own in the model")

    def _check_same_base(self, src: CheckpointSource) -> None:
        """``src``'s adapter sits on another base folder: accepted when :func:`base_difference`
        finds none in what the adapters do not replace."""
        assert src.adapter is not None
        saved = [str(m) for m in (getattr(self.cfg, "modules_to_save", None) or [])]
        why = base_difference(self.base, src.base_source(), saved)
        if why:
            raise IncompatibleCheckpoints(
                f"space: adapter needs every adapter on the same base checkpoint; {_label(src.adapter)} is on "
                f"{_label(src.weights)}, not on {_label(self.base_id[0])}, and the bases {why}", [])

    def load(self, src: CheckpointSource) -> dict[str, torch.Tensor]:
        """The adapter tensors of ``src`` under the live model's names (fresh copies). An adapter on
        another base folder is taken when that base differs only in modules the adapter replaces
        (:meth:`_check_same_base`)."""
        if src.adapter is None:
            raise IncompatibleCheckpoints(
                f"space: adapter interpolates adapter tensors, but {src.weights.name} is a full checkpoint; "
                "use space: merged to put full checkpoints and adapters on one path", [])
        if (src.weights, src.config_dir) != self.base_id:
            self._check_same_base(src)
        kind, first_kind = _ptype(peft_config(src.adapter, src.config_dir)), _ptype(self.cfg)
        if kind != first_kind:  # peft would fail with a KeyError on the other type's tensors
            why = ("a prompt-learning adapter has no merged weights, so no path joins these two"
                   if {kind, first_kind} & {"PROMPT_TUNING", "PREFIX_TUNING"} else "space: merged mixes them")
            raise IncompatibleCheckpoints(
                f"space: adapter needs adapters of one type (one adapter layout): {_label(self.first)} is {first_kind}, "
                f"{_label(src.adapter)} is {kind} ({why})", [])
        params = dict(self.model.named_parameters())
        live = [params[n].data for n in self.names]
        saved = [t.clone() for t in live]
        _set_adapter(self.peft_model, load_adapter_weights(src.adapter), self.names, f"adapter {src.adapter.name}")
        out = {n: t.clone() for n, t in zip(self.names, live, strict=True)}
        with torch.no_grad():
            torch._foreach_copy_(live, saved)
        return out


def base_difference(a: CheckpointSource, b: CheckpointSource, modules_to_save: Sequence[str] = ()) -> str | None:
    """How two base checkpoints differ for adapters that carry their own copy of
    ``modules_to_save``, or ``None`` when they do not: the configs (but for the path and the
    library's version) and every tensor outside those modules must be equal. A tune family's
    PEFT members of two seeds sit on two θ0 folders (``init-s1``, ``init-s2``) that differ
    only in the fresh classifier head, which every member replaces with its own trained copy:
    the model at each end is then exactly the adapter on either base. Tensors are read one at
    a time (:class:`~basin.checkpoints.LazyStateDict`), so the API can ask this of any size of
    base without holding either. Used by :class:`AdapterSpace` and the API's Check."""
    if (a.weights, a.config_dir) == (b.weights, b.config_dir):
        return None
    ignore = ("_name_or_path", "transformers_version")
    a_cfg = {k: v for k, v in read_config(a.config_dir).items() if k not in ignore}
    b_cfg = {k: v for k, v in read_config(b.config_dir).items() if k not in ignore}
    if a_cfg != b_cfg:
        key = sorted(k for k in a_cfg.keys() | b_cfg.keys() if a_cfg.get(k) != b_cfg.get(k))[0]
        return f"configs differ in {key!r}"
    saved = [str(m) for m in modules_to_save]

    def replaced(name: str) -> bool:  # a tensor of a module the adapter carries its own copy of
        module = name.rsplit(".", 1)[0]
        return any(module == m or module.endswith("." + m) for m in saved)

    first, other = _TensorReader(a), _TensorReader(b)
    differ = sorted(k for k in first.names ^ other.names if not replaced(k))
    for k in sorted(first.names & other.names):
        if differ:
            break
        if not replaced(k) and not first.same(k, other):
            differ.append(k)
    if differ:
        return f"differ in a tensor the adapters do not replace: {differ[0]!r}"
    return None


class _TensorReader:
    """A checkpoint's tensors one at a time, for comparing two bases: safetensors by their raw
    bytes at the header's offsets (equal bytes, dtype and shape: equal tensors), ``.bin`` files
    memory-mapped. (:class:`basin.checkpoints.LazyStateDict` does more, but the checkpoints
    module opens adapters, so this module reads through :mod:`basin.formats` only.)"""

    def __init__(self, src: CheckpointSource):
        from basin.formats import safetensors_spans, weight_files_at

        fmt, files = weight_files_at(src.weights, src.id)
        self._spans: dict[str, tuple[Path, Any]] = {}
        self._bin: dict[str, torch.Tensor] = {}
        for f in files:
            if fmt == "bin":
                self._bin.update(load_bin(f, mmap=True))
            else:
                self._spans.update({k: (f, t) for k, t in safetensors_spans(f).items()})
        self.names = set(self._spans) | set(self._bin)

    def _raw(self, name: str) -> tuple[Any, Any, bytes]:
        f, t = self._spans[name]
        with open(f, "rb") as fh:
            fh.seek(t.offset)
            return t.dtype, tuple(t.shape), fh.read(t.nbytes)

    def tensor(self, name: str) -> torch.Tensor:
        if name in self._bin:
            return self._bin[name]
        dtype, shape, raw = self._raw(name)
        return torch.frombuffer(bytearray(raw), dtype=getattr(torch, dtype)).reshape(shape)

    def same(self, name: str, other: _TensorReader) -> bool:
        if name in self._spans and name in other._spans:
            return self._raw(name) == other._raw(name)
        x, y = self.tensor(name), other.tensor(name)
        return x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)


def saved_modules(adapter_dir: Path) -> list[str]:
    """The ``modules_to_save`` an adapter folder's config lists (plain JSON, no peft: the store
    has checked the file's fields and values, :mod:`basin.untrusted`)."""
    import json

    try:
        cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return []
    mods = cfg.get("modules_to_save") if isinstance(cfg, dict) else None
    return [str(m) for m in mods] if isinstance(mods, list) else []


def _label(path: Path) -> str:
    """A checkpoint folder as a message names it: its last two components (``member/final``)."""
    return "/".join(Path(path).parts[-2:])


def adapter_sources(sources: Mapping[str, CheckpointSource]) -> bool:
    """Whether every source is an adapter on one base (merged-space paths then move only
    what the adapters change, see :func:`moved_names`)."""
    srcs = list(sources.values())
    return bool(srcs) and all(s.adapter is not None for s in srcs) and len(
        {(s.weights, s.config_dir) for s in srcs}) == 1

