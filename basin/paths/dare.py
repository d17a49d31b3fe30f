"""DARE (Yu et al. 2023, "Language Models are Super Mario"): drop and rescale; over λ.

θ(λ) = θ0 + λ·m, with m computed once: each entry of each task vector τᵢ = θᵢ − θ0 is
kept with probability ``density`` (= 1 − p, p the paper's drop rate), by a seeded CPU
generator per model and tensor (:func:`basin.paths._merge.drop_seed`: one ``seed``, one
merge, on any device), and the kept ones rescaled — ``inverse``: ÷ density, the paper's
1/(1 − p); ``l1``: to the tensor's ‖τᵢ‖₁, what mergekit 0.1.5's ``rescale: true`` does;
``none``. Then combined as task arithmetic (mergekit ``dare_linear``), or with TIES's sign
election and disjoint mean when ``ties`` is set (mergekit ``dare_ties``). mergekit draws
from torch's global generator and cannot be seeded per merge; otherwise its names and
defaults (``normalize: false``). See :mod:`basin.paths._merge`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from basin.paths._merge import MergeSpec, Rescale, TaskVectorMerge, drop, drop_seed

if TYPE_CHECKING:
    import torch


class DarePath(MergeSpec):
    """θ0 + λ·DARE(τ₁…τₙ) (mergekit ``dare_linear`` / ``dare_ties``)."""

    type: Literal["dare"] = "dare"
    density: float = Field(0.5, gt=0.0, le=1.0, description="probability an entry is kept, 1 − p")
    seed: int = Field(0, ge=0, description="seed of the drop masks")
    rescale: Rescale = Field("inverse", description="inverse: ÷ density (the paper); l1: keep each "
                             "tensor's L1 norm (mergekit 0.1.5); none")
    ties: bool = Field(False, description="elect signs and take the disjoint mean (mergekit dare_ties)")
    normalize: bool = False


class Dare(TaskVectorMerge):
    """Basis: origin θ0, direction DARE(τ₁…τₙ); coefficient λ."""

    type = "dare"
    Spec = DarePath
    help = "θ(λ) = θ0 + λ·Σᵢ wᵢ·DARE(θᵢ − θ0): drop with rate 1 − density, rescale (seeded; mergekit dare_linear / dare_ties)"
    params = (("density", "Density (keep probability, 1 − p)"), ("seed", "Seed (drop masks)"),
              ("rescale", "Rescale kept entries"), ("ties", "Sign election (dare_ties)"),
              ("weights", "Weights wᵢ (one per model, default 1)"), ("normalize", "Divide by Σ wᵢ"))
    order = 94
    sparsification = "random"

    def consensus(self) -> bool:
        return bool(self.spec.ties)

    def sparsify(self, tau: torch.Tensor, name: str, k: int) -> torch.Tensor:
        s = self.spec
        return drop(tau, s.density, drop_seed(s.seed, k, name), s.rescale)
