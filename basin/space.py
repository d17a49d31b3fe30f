"""``ParamSpace``: one live model whose parameters are rewritten in place per point.

A path reduces every point to coefficients ``c`` over a fixed *basis*: an origin
θ₀ and directions d₁…d_K (model-size tensor lists on the device, computed once)::

    θ(c) = θ₀ + Σₖ cₖ · dₖ

:meth:`ParamSpace.mix_` writes θ(c) into the live model's tensors with
``torch._foreach_copy_`` / ``torch._foreach_add_`` — no model rebuild, no reload,
no ``.to()`` per point. Tensors outside the run's *scope* (and mismatched tensors
held by ``on_mismatch: hold``) are never written: they keep the values of the
checkpoint the model was built from.

Scope: ``all``; presets ``embeddings``, ``lower``/``middle``/``upper`` thirds of
the transformer layers, ``head`` (neither embeddings nor a layer); or a regex
searched in parameter names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from basin.errors import CheckpointError, InvalidSpec
from basin.scope_regex import compile_scope

logger = logging.getLogger(__name__)

#: ``layer.3.`` / ``layers.3.`` / ``h.3.`` / ``block.3.`` — the leftmost match is the layer
#: (T5's ``block.3.layer.1.`` is block 3).
LAYER_RE = re.compile(r"(?:^|\.)(?:layer|layers|h|block)\.(\d+)\.")
EMBED_RE = re.compile(r"embed|(?:^|\.)(?:wte|wpe|shared)\.")

TASK_AUTO_CLASSES = {
    "classification": "AutoModelForSequenceClassification",
    "causal_lm": "AutoModelForCausalLM",
    "seq2seq": "AutoModelForSeq2SeqLM",
}


def layer_index(name: str) -> int | None:
    """Transformer layer index in a parameter name, or ``None`` (embeddings, head...)."""
    m = LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def param_group(name: str) -> str:
    """``"embeddings"``, ``"layer N"`` or ``"head"`` — the unit of per-layer summaries."""
    i = layer_index(name)
    if i is not None:
        return f"layer {i}"
    return "embeddings" if EMBED_RE.search(name) else "head"


def select_scope(scope: str, names: Sequence[str]) -> list[str]:
    """The names (in the given order) that a scope moves; :class:`InvalidSpec` when none.

    Thirds: with ``n`` layers, layer ``i`` is in third ``min(2, ⌊(i + ½)·3 / n⌋)``
    (12 layers → 0–3 / 4–7 / 8–11; 2 layers → lower / upper).
    """
    if scope == "all":
        out = list(names)
    elif scope in ("lower", "middle", "upper"):
        idx = {n: layer_index(n) for n in names}
        nlayers = max((i for i in idx.values() if i is not None), default=-1) + 1
        want = ("lower", "middle", "upper").index(scope)
        out = [
            n for n in names
            if (layer := idx[n]) is not None and min(2, int((layer + 0.5) * 3 / nlayers)) == want
        ]
    elif scope == "embeddings":
        out = [n for n in names if layer_index(n) is None and EMBED_RE.search(n)]
    elif scope == "head":
        out = [n for n in names if layer_index(n) is None and not EMBED_RE.search(n)]
    else:
        try:
            rx = compile_scope(scope)  # RE2: linear time (basin.scope_regex)
        except re.error as e:
            raise InvalidSpec(f"scope {scope!r} is neither a preset nor a valid regex: {e}") from None
        out = [n for n in names if rx.search(n)]
    if not out:
        raise InvalidSpec(
            f"scope {scope!r} matches no parameter that can move "
            f"(presets: all, embeddings, lower, middle, upper, head; or a regex over names "
            f"such as {list(names)[:3]})"
        )
    return out


def build_model(task: str, config_dir: Path, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """One model from ``config_dir``'s config for ``task``, loaded with ``state_dict`` (CPU, fp32).

    Built with ``AutoModelFor*.from_config`` + ``load_state_dict``; raises
    :class:`CheckpointError` when a parameter (not tied to a loaded one) is missing.
    """
    import transformers

    try:
        config = transformers.AutoConfig.from_pretrained(str(config_dir))
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"cannot read the model config in {config_dir}: {e}") from None
    auto = getattr(transformers, TASK_AUTO_CLASSES[task])
    try:
        model = auto.from_config(config)
    except ValueError as e:
        raise CheckpointError(
            f"a {config.model_type} checkpoint cannot be used for task {task!r}: {str(e).splitlines()[0]}"
        ) from None
    model = model.float()
    result = model.load_state_dict(dict(state_dict), strict=False)
    by_name = dict(model.named_parameters(remove_duplicate=False))
    loaded = {id(by_name[k]) for k in state_dict if k in by_name}
    missing = [k for k in result.missing_keys if k in by_name and id(by_name[k]) not in loaded]
    if missing:
        raise CheckpointError(
            f"checkpoint does not fit its config for task {task!r}: {len(missing)} parameter(s) "
            f"missing, e.g. {missing[:5]}"
        )
    if result.unexpected_keys:
        logger.warning("ignoring %d tensors the model does not have, e.g. %s",
                       len(result.unexpected_keys), result.unexpected_keys[:3])
    model.eval()
    model.requires_grad_(False)
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
    for ``names[i]``. Device memory: the live model + origin + K directions.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]):
        self.model = model
        by_name = live_tensors(model)
        self.names = list(names)
        self.live: list[torch.Tensor] = [by_name[n] for n in self.names]
        self.origin: list[torch.Tensor] = []
        self.directions: list[list[torch.Tensor]] = []

    def set_basis(self, origin: list[torch.Tensor], directions: list[list[torch.Tensor]]) -> None:
        """Install θ₀ and d₁…d_K: each a list aligned with :attr:`names`, live shape/dtype/device."""
        for i, (o, t) in enumerate(zip(origin, self.live, strict=True)):
            if o.shape != t.shape or o.dtype != t.dtype or o.device != t.device:
                raise ValueError(f"origin tensor {self.names[i]} does not match the live model")
        for d in directions:
            if len(d) != len(self.live):
                raise ValueError("direction length differs from the number of movable tensors")
        self.origin = origin
        self.directions = directions

    @torch.no_grad()
    def mix_(self, coeffs: Sequence[float]) -> None:
        """Write θ₀ + Σₖ cₖ·dₖ into the live tensors, in place (``len(coeffs) == K``)."""
        if len(coeffs) != len(self.directions):
            raise ValueError(f"expected {len(self.directions)} coefficients, got {len(coeffs)}")
        torch._foreach_copy_(self.live, self.origin)
        for c, d in zip(coeffs, self.directions, strict=True):
            if c != 0.0:
                torch._foreach_add_(self.live, d, alpha=float(c))

    def current(self) -> dict[str, torch.Tensor]:
        """The live movable tensors by name (views into the model; do not modify)."""
        return dict(zip(self.names, self.live, strict=True))
