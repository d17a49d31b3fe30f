"""TIES merging (Yadav et al. 2023): trim, elect sign, disjoint mean; swept over λ.

θ(λ) = θ0 + λ·m, with m computed once: each task vector τᵢ = θᵢ − θ0 trimmed to its
``density`` share of largest magnitudes (per tensor), weighted by wᵢ, the sign of
Σᵢ τᵢ elected per entry, and the entries that agree with it averaged (``normalize``, the
disjoint mean: ÷ Σ wᵢ over the agreeing models). mergekit's ``ties`` (0.1.5), names and
defaults included (``normalize: true``), except ``density``: 0.2 here, the paper's top-20 %
(mergekit's default 1.0 trims nothing). See :mod:`basin.paths._merge`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from basin.paths._merge import MergeSpec, TaskVectorMerge, magnitude

if TYPE_CHECKING:
    import torch


class TiesPath(MergeSpec):
    """θ0 + λ·TIES(τ₁…τₙ) (mergekit ``ties``)."""

    type: Literal["ties"] = "ties"
    density: float = Field(0.2, gt=0.0, le=1.0, description="share of each task vector's entries kept "
                           "(largest |τ|), per tensor")
    normalize: bool = True


class Ties(TaskVectorMerge):
    """Basis: origin θ0, direction TIES(τ₁…τₙ); coefficient λ."""

    type = "ties"
    Spec = TiesPath
    help = "θ(λ) = θ0 + λ·TIES(θᵢ − θ0): trim to density, elect sign, disjoint mean (mergekit ties)"
    params = (("density", "Density (share of |τ| kept)"), ("weights", "Weights wᵢ (one per model, default 1)"),
              ("normalize", "Disjoint mean (÷ Σ wᵢ of agreeing models)"))
    order = 92
    sparsification = "magnitude"

    def consensus(self) -> bool:
        return True

    def sparsify(self, tau: torch.Tensor, name: str, k: int) -> torch.Tensor:
        return magnitude(tau, self.spec.density)
