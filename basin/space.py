"""``ParamSpace``: one live model whose parameters are rewritten in place per point.

A path reduces every point to coefficients ``c`` over a fixed *basis*: an origin
θ₀ and directions d₁…d_K (model-size tensor lists on the device, computed once)::

    θ(c) = θ₀ + Σₖ cₖ · dₖ

(a coefficient may also be one number per tensor: SLERP, whose tensors each have their
own angle). :meth:`ParamSpace.mix_` writes θ(c) into the live model's tensors with
``torch._foreach_copy_`` / ``torch._foreach_add_`` — no model rebuild, no reload,
no ``.to()`` per point. Tensors outside the run's *scope* (and mismatched tensors
held by ``on_mismatch: hold``) are never written: they keep the values of the
checkpoint the model was built from.

Precision and place (:mod:`basin.holding`): an fp32 basis on the model's device is mixed
straight into the live tensors (``torch._foreach_*``). A basis held in bf16 / fp16, or held
on the host while the model is on a GPU, is mixed **tensor by tensor in fp32**: each held
tensor is moved to the device (from pinned memory, asynchronously) and widened there, summed
in one fp32 scratch buffer (the largest tensor's size, at most 2²⁴ elements: a larger tensor
goes a flat span at a time), and cast once into the live tensor — no fp32 master copy of
the basis, no whole-model scratch.

Scope: ``all``; the groups of :mod:`basin.groups` (``embeddings``, ``head``, ``rest``),
``lower``/``middle``/``upper`` thirds of every stack of blocks, ``<stack>.<third>``
(``encoder.upper``) or ``<stack>``; or a regex searched in parameter names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import torch
from torch import nn

from basin.errors import CheckpointError, InvalidSpec
from basin.groups import THIRDS, Group, ModelGroups
from basin.scope_regex import compile_scope
from basin.tasks import TASKS

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: task → the ``transformers`` auto class its models are built with (its entry in :mod:`basin.tasks`).
TASK_AUTO_CLASSES = {t: e.auto_class for t, e in TASKS.items()}

#: Named scopes: ``all``, the groups of :mod:`basin.groups`, and thirds of every stack.
PRESETS = ("all", "embeddings", "lower", "middle", "upper", "head", "rest")


def _scope_help(groups: ModelGroups | None, names: Sequence[str]) -> str:
    stacks = list(groups.stacks) if groups is not None else []
    with_stacks = [f"{s}.{t}" for s in stacks for t in THIRDS] + stacks
    return (
        f"presets: {', '.join(PRESETS)}"
        + (f"; this model's stacks: {', '.join(with_stacks)}" if with_stacks else "")
        + f"; or a regex over names such as {list(names)[:3]}"
    )


def select_scope(scope: str, names: Sequence[str], groups: ModelGroups | None = None) -> list[str]:
    """The names (in the given order) that a scope moves; :class:`InvalidSpec` when none.

    Named scopes read the model's groups (:func:`basin.groups.model_groups`):
    ``embeddings``, ``head``, ``rest``; ``lower``/``middle``/``upper`` take that third of
    *every* stack (block ``i`` of ``n`` is in third ``min(2, ⌊(i + ½)·3/n⌋)``: 12 blocks →
    0–3 / 4–7 / 8–11; 2 blocks → lower / upper); ``<stack>.<third>`` (``encoder.upper``,
    ``decoder.lower``) one stack's third; ``<stack>`` a whole stack. Anything else is a
    regex searched in the names.
    """
    stacks = groups.stacks if groups is not None else {}
    stack, _, third = scope.rpartition(".")
    if scope == "all":
        out = list(names)
    elif scope in PRESETS or scope in stacks or (stack in stacks and third in THIRDS):
        if groups is None:
            raise InvalidSpec(f"scope {scope!r} needs the model's parameter groups")
        out = [n for n in names if (g := groups.get(n)) is not None and _in_scope(scope, g, stacks)]
    else:
        try:
            rx = compile_scope(scope)  # RE2: linear time (basin.scope_regex)
        except re.error as e:
            raise InvalidSpec(f"scope {scope!r} is neither a preset nor a valid regex: {e}") from None
        out = [n for n in names if rx.search(n)]
    if not out:
        raise InvalidSpec(f"scope {scope!r} matches no parameter that can move ({_scope_help(groups, names)})")
    return out


def _in_scope(scope: str, g: Group, stacks: Mapping[str, int]) -> bool:
    if scope in ("embeddings", "head", "rest"):
        return g.kind == scope
    if g.kind != "block":
        return False
    if scope in THIRDS:
        return g.third == scope
    if scope in stacks:
        return g.stack == scope
    stack, _, third = scope.rpartition(".")
    return g.stack == stack and g.third == third


def make_model(task: str, config_dir: Path, *, meta: bool = False) -> nn.Module:
    """A model from ``config_dir``'s config for ``task`` (random init, CPU, fp32, eval mode);
    ``meta``: a skeleton on the ``meta`` device (names, shapes and tied aliases; no memory
    for weights), enough for :func:`key_mapper`."""
    import contextlib

    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(str(config_dir))
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read the model config in {config_dir}: {e}") from None
    auto = getattr(transformers, TASK_AUTO_CLASSES[task])
    try:
        with torch.device("meta") if meta else contextlib.nullcontext():
            model = auto.from_config(config)
    except ValueError as e:
        raise CheckpointError(
            f"a {config.model_type} checkpoint cannot be used for task {task!r}: {str(e).splitlines()[0]}"
        ) from None
    model = model.float()
    model.eval()
    model.requires_grad_(False)
    return model


def key_mapper(model: nn.Module) -> Callable[[Iterable[str]], dict[str, str]]:
    """A function: stored tensor names → the model's *canonical* names for them.

    Renames as ``from_pretrained`` does, with ``transformers``' own loading rules: the
    model's registered checkpoint conversions (GPT-NeoX ``embed_out`` → ``lm_head``,
    legacy ``gamma``/``beta``) and the base-model prefix added or stripped (a
    ``BertModel`` file in a ``BertFor…`` model). Tied aliases then map to one canonical
    name (the first the model lists for that tensor), so a file storing ``lm_head.weight``
    and one storing ``transformer.wte.weight`` give the same name. A key that needs a
    tensor *conversion* (fusing or splitting tensors) is refused with
    :class:`CheckpointError`: Basin mixes stored tensors only. Unknown keys keep their name.
    """
    meta = model.state_dict(keep_vars=True)
    prefix = getattr(model, "base_model_prefix", None) or None
    canon: dict[str, str] = {}
    first: dict[int, str] = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        canon[name] = first.setdefault(id(t), name)
    try:
        from transformers.conversion_mapping import get_model_conversion_mapping
        from transformers.core_model_loading import (
            WeightConverter,
            WeightRenaming,
            rename_source_key,
        )
    except ImportError:  # transformers < 5: key renaming by base-model prefix only
        def by_prefix(keys: Iterable[str]) -> dict[str, str]:
            return {k: canon.get(n, n) for k in keys for n in [_prefixed(k, prefix, meta)]}
        return by_prefix
    mapping = get_model_conversion_mapping(model)  # type: ignore[arg-type]
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]

    def rename_keys(keys: Iterable[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for k in keys:
            new, pattern = rename_source_key(k, renamings, converters, prefix, meta)
            if new not in meta and k in meta:
                new, pattern = rename_source_key(k, [], [], prefix, meta)
            if pattern is not None:
                raise CheckpointError(
                    f"tensor {k!r} must be converted (not only renamed) to load into "
                    f"{type(model).__name__}; Basin mixes stored tensors only"
                )
            out[k] = canon.get(new, new)
        return out

    return rename_keys


def _prefixed(k: str, prefix: str | None, meta: Mapping[str, object]) -> str:
    if k in meta or not prefix:
        return k
    if k.startswith(prefix + ".") and k[len(prefix) + 1:] in meta:
        return k[len(prefix) + 1:]
    if f"{prefix}.{k}" in meta:
        return f"{prefix}.{k}"
    return k


def rename(sd: Mapping[str, T], names: Mapping[str, str]) -> dict[str, T]:
    """``sd`` under the model's names (the same values, no copy); of two keys with one
    canonical name (a tied pair stored twice) the first is kept. A lazy state dict
    (:class:`basin.checkpoints.LazyStateDict`) is renamed without reading a tensor."""
    renamed = getattr(sd, "renamed", None)
    if renamed is not None:
        return renamed(names)
    out: dict[str, T] = {}
    for k, t in sd.items():
        out.setdefault(names.get(k, k), t)
    return out


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor], task: str = "") -> None:
    """Load a state dict (already under the model's names) into ``model``.

    Raises :class:`CheckpointError` when a parameter (not tied to a loaded one) is missing.
    A lazy state dict (``state_dict.fresh``: each access reads one tensor) is copied in
    tensor by tensor, so the checkpoint is never whole in memory beside the model.
    """
    if getattr(state_dict, "fresh", False):
        missing_keys, unexpected = _copy_in(model, state_dict)
    else:
        result = model.load_state_dict(dict(state_dict), strict=False)
        missing_keys, unexpected = result.missing_keys, result.unexpected_keys
    by_name = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(by_name[k]) for k in state_dict if k in by_name}
    missing = [k for k in missing_keys if k in by_name and id(by_name[k]) not in loaded]
    if missing:
        raise CheckpointError(
            f"checkpoint does not fit its config{f' for task {task!r}' if task else ''}: "
            f"{len(missing)} parameter(s) missing, e.g. {missing[:5]}"
        )
    if unexpected:
        logger.warning("ignoring %d tensors the model does not have, e.g. %s",
                       len(unexpected), unexpected[:3])


@torch.no_grad()
def _copy_in(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    """``load_state_dict(strict=False)`` one tensor at a time: ``(missing, unexpected)`` keys."""
    own = model.state_dict(keep_vars=True)
    unexpected: list[str] = []
    for k in state_dict:
        t = own.get(k)
        if t is None:
            unexpected.append(k)
            continue
        v = state_dict[k]
        if tuple(v.shape) != tuple(t.shape):
            raise CheckpointError(f"checkpoint does not fit its config: {k} has shape {list(v.shape)}, "
                                  f"the model {list(t.shape)}")
        t.copy_(v)
        del v
    return [k for k in own if k not in state_dict], unexpected


def build_model(task: str, config_dir: Path, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """One model from ``config_dir``'s config for ``task``, loaded with ``state_dict`` (CPU, fp32).

    Stored names are renamed as ``from_pretrained`` renames them (:func:`key_mapper`).
    """
    model = make_model(task, config_dir)
    load_weights(model, rename(state_dict, key_mapper(model)(state_dict)), task)
    return model


def live_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """State-dict name → the model's own tensor, every alias included (tied weights share one)."""
    out: dict[str, torch.Tensor] = {}
    for k, p in model.named_parameters(remove_duplicate=False):
        out[k] = p.data
    for k, b in model.named_buffers(remove_duplicate=False):
        out[k] = b
    return out


class ParamSpace:
    """A live model plus a basis (origin θ₀, directions dₖ) over its movable tensors.

    ``names`` are the movable tensors (one name per underlying tensor, so a tied
    ``lm_head``/``wte`` pair is written once); ``live[i]`` is the model's tensor
    for ``names[i]``. Memory: the live model + origin + K directions as held (fp32 on the
    device by default; bf16 / fp16, or on the host: :mod:`basin.holding`), plus, for a
    basis not held as the live model is, one fp32 scratch buffer of the largest tensor (at
    most :data:`basin.holding.SPAN` elements: a larger tensor is mixed a span at a time).
    """

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self.model = model
        by_name = live_tensors(model)
        self.names = list(names)
        self.live: list[torch.Tensor] = [by_name[n] for n in self.names]
        self.origin: list[torch.Tensor] = []
        self.directions: list[list[torch.Tensor]] = []
        self._direct = True  # an fp32 basis beside an fp32 model: foreach straight into it
        self._buf: torch.Tensor | None = None

    def set_basis(self, origin: list[torch.Tensor], directions: list[list[torch.Tensor]], *,
                  per_tensor: bool = False) -> None:
        """Install θ₀ and d₁…d_K: each a list aligned with :attr:`names`, live shape.

        Basis tensors are floating point (fp32, bf16 or fp16), on the live tensor's device or
        on the host (CPU). An fp32 basis beside an fp32 model on its device has its points
        written with ``torch._foreach_*`` straight into the model (as always); otherwise (or with ``per_tensor``: a
        basis streamed from the host, which on a CPU-only machine is where the model is) tensor
        by tensor in fp32.
        """
        floats = (torch.float32, torch.bfloat16, torch.float16)
        for d in directions:
            if len(d) != len(self.live):
                raise ValueError("direction length differs from the number of movable tensors")
        for i, t in enumerate(self.live):
            for x in (origin[i], *(d[i] for d in directions)):
                if x.shape != t.shape or x.dtype not in floats or x.device not in (t.device, torch.device("cpu")):
                    raise ValueError(f"basis tensor {self.names[i]} does not match the live model")
        self.origin = origin
        self.directions = directions
        self._direct = not per_tensor and all(
            x.dtype == t.dtype == torch.float32 and x.device == t.device
            for i, t in enumerate(self.live) for x in (origin[i], *(d[i] for d in directions)))
        self._buf = None
        if not self._direct and self.live:
            from basin.holding import SPAN

            largest = max(self.live, key=lambda t: t.numel())
            self._buf = torch.empty(min(largest.numel(), SPAN), dtype=torch.float32, device=largest.device)

    @torch.no_grad()
    def mix_(self, coeffs: Sequence[float | Sequence[float]]) -> None:
        """Write θ₀ + Σₖ cₖ·dₖ into the live tensors, in place (``len(coeffs) == K``).

        A coefficient is a number (every tensor: one ``torch._foreach_add_``) or a sequence
        of one number per movable tensor (a path whose tensors move at their own rates,
        SLERP): tensor ``i`` gets ``cₖ[i]·dₖ[i]``.
        """
        if len(coeffs) != len(self.directions):
            raise ValueError(f"expected {len(self.directions)} coefficients, got {len(coeffs)}")
        for c in coeffs:
            if isinstance(c, Sequence) and len(c) != len(self.live):
                raise ValueError(f"per-tensor coefficients: expected {len(self.live)}, got {len(c)}")
        if not self._direct:
            self._mix_each(coeffs)
            return
        target = self.live
        torch._foreach_copy_(target, self.origin)
        for c, d in zip(coeffs, self.directions, strict=True):
            if isinstance(c, Sequence):
                for t, x, ci in zip(target, d, c, strict=True):
                    if ci != 0.0:
                        t.add_(x, alpha=float(ci))
            elif c != 0.0:
                torch._foreach_add_(target, d, alpha=float(c))

    def _mix_each(self, coeffs: Sequence[float | Sequence[float]]) -> None:
        """Tensor by tensor (a large one a flat span at a time, :data:`basin.holding.SPAN`): the held
        tensors moved to the live tensor's device (a no-op when they are there; asynchronous from
        pinned host memory), summed in fp32 in the scratch buffer, cast once into the live tensor."""
        from basin.holding import spans

        assert self._buf is not None
        for i, t in enumerate(self.live):
            if not t.is_contiguous():  # (never a parameter) one piece, through a tensor of its own
                acc = self.origin[i].to(device=t.device, dtype=torch.float32, copy=True)
                for c, dk in zip(coeffs, self.directions, strict=True):
                    ck = float(c[i]) if isinstance(c, Sequence) else float(c)
                    if ck != 0.0:
                        acc.add_(dk[i].to(t.device), alpha=ck)
                t.copy_(acc)
                continue
            flat = t.view(-1)
            o = self.origin[i].reshape(-1)
            ds = [d[i].reshape(-1) for d in self.directions]
            cs = [float(c[i]) if isinstance(c, Sequence) else float(c) for c in coeffs]
            for start, stop in spans(t.numel()):
                acc = self._buf[: stop - start]
                acc.copy_(o[start:stop].to(t.device, non_blocking=True))
                for ci, d in zip(cs, ds, strict=True):
                    if ci != 0.0:
                        acc.add_(d[start:stop].to(t.device, non_blocking=True), alpha=ci)
                flat[start:stop].copy_(acc)

    def point(self, coeffs: Sequence[float | Sequence[float]], i: int) -> torch.Tensor:
        """Tensor ``i`` of θ(c) in fp32 on the live tensor's device (a new tensor), mixed as
        :meth:`mix_` mixes it (for callers that stack several points: ``measure_many``)."""
        t = self.live[i]
        acc = self.origin[i].to(device=t.device, dtype=torch.float32, copy=True)
        for c, d in zip(coeffs, self.directions, strict=True):
            ci = float(c[i]) if isinstance(c, Sequence) else float(c)
            if ci != 0.0:
                acc.add_(d[i].to(t.device, non_blocking=True), alpha=ci)
        return acc

    def current(self) -> dict[str, torch.Tensor]:
        """The live movable tensors by name (views into the model; do not modify)."""
        return dict(zip(self.names, self.live, strict=True))
