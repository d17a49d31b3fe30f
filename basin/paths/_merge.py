"""What the task-vector merge paths share (``task_arithmetic``, ``ties``, ``dare``).

A merge of fine-tuned checkpoints θ₁…θ_n on a base θ₀ (Ilharco et al. 2023, task
arithmetic; Yadav et al. 2023, TIES; Yu et al. 2023, DARE), with the conventions and
parameter names of mergekit's ``generalized_task_arithmetic`` (arcee-ai/mergekit 0.1.5,
``mergekit/merge_methods/generalized_task_arithmetic.py`` and ``mergekit/sparsify.py``),
per tensor:

1. task vectors τᵢ = θᵢ − θ₀;
2. sparsified: TIES keeps the ``density`` share of largest |τᵢ| (``magnitude``), DARE
   keeps each entry with probability ``density`` = 1 − p and rescales the kept ones
   (``random``); task arithmetic keeps all;
3. weighted: τᵢ ← wᵢ·τᵢ (mergekit's per-model ``weight``, default 1 here);
4. with sign consensus (TIES, DARE-TIES): the elected sign is that of Σᵢ τᵢ (≥ 0 → +),
   and only entries of that sign count; merged m = Σᵢ τᵢ·maskᵢ, and with ``normalize``
   divided by Σᵢ wᵢ·maskᵢ (the disjoint mean; 1 where no entry agrees). Without
   consensus m = Σᵢ τᵢ, with ``normalize`` divided by Σᵢ wᵢ;
5. θ(λ) = θ₀ + λ·m — mergekit's ``lambda``, the coordinate the path sweeps.

Steps 1–4 do not depend on λ: :func:`merged_direction` computes m once, in ``build``,
one tensor at a time (peak extra memory: one tensor per model), and every point is one
``θ₀ + λ·m`` mix. This module has no path class (its name starts with ``_``: the registry
skips it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from basin.paths.base import (
    AlphaRange,
    Anchor,
    BuildContext,
    Built,
    FrozenModel,
    OneD,
    Points,
)

if TYPE_CHECKING:
    import torch

Density = float  # documented by the Field bounds below


class MergeSpec(FrozenModel):
    """Fields every task-vector merge shares: ``base``, ``models``, ``weights``, the λ grid."""

    base: str = Field(description="the base checkpoint θ₀ the models were fine-tuned from (λ = 0)")
    models: list[str] = Field(min_length=1, description="fine-tuned checkpoints θ₁…θ_n (task vectors θᵢ − θ₀)")
    weights: list[float] | None = Field(
        None, description="one weight per model (mergekit's `weight`); default 1 each")
    points: Points = 26
    range: AlphaRange = (0.0, 1.0)

    @model_validator(mode="after")
    def _models(self) -> MergeSpec:
        if len(set(self.models)) < len(self.models):
            raise ValueError(f"models lists a checkpoint twice: {self.models}")
        if self.base in self.models:
            raise ValueError(f"the base {self.base!r} is also one of the models: its task vector would be 0")
        if self.weights is not None and len(self.weights) != len(self.models):
            raise ValueError(f"weights has {len(self.weights)} values for {len(self.models)} models; "
                             "give one per model (or none: 1 each)")
        return self


class TaskVectorMerge(OneD):
    """Basis: origin θ₀, one direction m (the merged task vector); coefficient λ."""

    ref_fields = ("base", "models")
    axis_titles = {"alpha": "λ"}
    slots = (("base", "Base θ0 (pre-trained, λ = 0)"),)
    list_slot = ("models", "Fine-tuned models θ1…θn")

    #: how each model's task vector is sparsified (None, "magnitude", "random")
    sparsification: str | None = None
    tensorwise = True  # per tensor; DARE's masks are seeded by the tensor's name

    def weights(self) -> list[float]:
        w = self.spec.weights
        return [float(x) for x in w] if w is not None else [1.0] * len(self.spec.models)

    def consensus(self) -> bool:
        """Whether signs are elected (TIES, DARE-TIES)."""
        return False

    def sparsify(self, tau: torch.Tensor, name: str, k: int) -> torch.Tensor:
        """Model ``k``'s task vector of tensor ``name`` after sparsification (default: as is)."""
        return tau

    def build(self, ctx: BuildContext) -> Built:
        origin = ctx.tensors(self.spec.base)
        m = merged_direction(ctx, origin, self.spec.models, self.weights(), self.sparsify,
                             consensus=self.consensus(), normalize=bool(self.spec.normalize))
        return Built(origin=origin, directions=[m], axes=self.axes(), anchors=self.anchors())

    def anchors(self) -> list[Anchor]:
        """θ₀ at λ = 0; at λ = 1 the merge itself (a fine-tuned model only when it is exactly that)."""
        s = self.spec
        plain = (self.sparsification is None and len(s.models) == 1 and self.weights() == [1.0])
        return [Anchor(s.base, {"alpha": 0.0}),
                Anchor(s.models[0] if plain else f"{self.type} merge (λ = 1)", {"alpha": 1.0})]

    def coeffs(self, coords: dict[str, float]) -> list[float]:
        return [coords["alpha"]]

    def key_params(self) -> dict[str, Any]:
        skip = {"type", "base", "models", "points", "range"}
        return {"type": self.type, **self.spec.model_dump(mode="json", exclude=skip),
                "weights": self.weights()}

    def endpoints(self) -> tuple[str, str] | None:  # type: ignore[override]
        """(θ₀, θ₁) for one model: the distance the summary reports; none for several."""
        return (self.spec.base, self.spec.models[0]) if len(self.spec.models) == 1 else None


def merged_direction(
    ctx: BuildContext, origin: list[torch.Tensor], models: Sequence[str], weights: Sequence[float],
    sparsify: Any, *, consensus: bool, normalize: bool,
) -> list[torch.Tensor]:
    """m, tensor by tensor (aligned with ``ctx.names``): steps 1–4 of the module docstring.

    ``sparsify(tau, name, k)`` returns model ``k``'s sparsified task vector of ``name``.
    """
    import torch

    sds = [ctx.load(r) for r in models]
    out: list[torch.Tensor] = []
    for j, name in enumerate(ctx.names):
        base = origin[j]
        deltas = torch.empty((len(models), *base.shape), dtype=base.dtype, device=base.device)
        for k, sd in enumerate(sds):
            tau = sd[name].to(device=base.device, dtype=base.dtype) - base
            deltas[k] = sparsify(tau, name, k)
        w = torch.tensor(list(weights), dtype=deltas.dtype, device=deltas.device)
        w = w.reshape(-1, *([1] * base.dim()))
        deltas.mul_(w)
        if consensus:
            majority = (deltas.sum(dim=0) >= 0).to(deltas.dtype) * 2 - 1
            mask = deltas.sign() == majority
            mixed = (deltas * mask).sum(dim=0)
            divisor = (w * mask).sum(dim=0)
            divisor[divisor == 0] = 1
        else:
            mixed = deltas.sum(dim=0)
            divisor = w.sum(dim=0).expand_as(mixed).clone()
            divisor[divisor.abs() < 1e-8] = 1
        if normalize:
            mixed = mixed / divisor
        out.append(mixed)
        del deltas
    return out


def magnitude(tau: torch.Tensor, density: float) -> torch.Tensor:
    """τ with all but its ``density`` share of largest |entries| set to 0 (mergekit's
    ``sparsify.magnitude``: k = max(1, ⌊density·numel⌋) entries, chosen by ``argsort``)."""
    import torch

    if density >= 1:
        return tau
    if density <= 0 or tau.numel() == 0:
        return torch.zeros_like(tau)
    k = max(1, int(density * tau.numel()))
    mask = torch.zeros(tau.numel(), dtype=tau.dtype, device=tau.device)
    mask[torch.argsort(tau.abs().reshape(-1), descending=True)[:k]] = 1
    return tau * mask.reshape_as(tau)


Rescale = Literal["inverse", "l1", "none"]


def drop_seed(seed: int, k: int, name: str) -> int:
    """The seed of model ``k``'s drop mask for tensor ``name`` (63 bits of sha256(seed, k, name)).

    Keyed by the tensor's canonical name, not its position: one seed gives the same masks
    whatever the scope, the file layout or the device.
    """
    h = hashlib.sha256(f"basin-dare:{seed}:{k}:{name}".encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


def drop(tau: torch.Tensor, density: float, seed: int, rescale: Rescale) -> torch.Tensor:
    """DARE's random drop: each entry kept with probability ``density`` (= 1 − p), drawn on
    the CPU from ``torch.Generator().manual_seed(seed)`` (``torch.bernoulli`` of a ``density``
    tensor, as mergekit's ``sparsify.bernoulli`` draws it), then rescaled:
    ``inverse`` ÷ density (Yu et al. 2023), ``l1`` × ‖τ‖₁/‖kept‖₁ (mergekit 0.1.5's
    ``rescale: true``; unchanged when either is below 1e-7), ``none``."""
    import torch

    if density >= 1:
        return tau
    g = torch.Generator().manual_seed(seed)
    mask = torch.bernoulli(torch.full(tuple(tau.shape), float(density), dtype=torch.float32), generator=g)
    kept = tau * mask.to(device=tau.device, dtype=tau.dtype)
    if rescale == "inverse":
        return kept / density
    if rescale == "l1":
        before, after = tau.abs().sum(), kept.abs().sum()
        if before < 1e-7 or after < 1e-7:
            return kept
        return kept * (before / after)
    return kept
