"""Task arithmetic (Ilharco et al. 2023): θ(λ) = θ0 + λ·Σᵢ wᵢ·(θᵢ − θ0), swept over λ.

mergekit's ``task_arithmetic`` (``normalize: false`` by default; with ``normalize`` the
sum is divided by Σ wᵢ). The merged task vector is computed once (:mod:`basin.paths._merge`).
"""

from __future__ import annotations

from typing import Literal

from basin.paths._merge import MergeSpec, TaskVectorMerge


class TaskArithmeticPath(MergeSpec):
    """θ0 + λ·Σᵢ wᵢ·(θᵢ − θ0) (mergekit ``task_arithmetic``)."""

    type: Literal["task_arithmetic"] = "task_arithmetic"
    normalize: bool = False


class TaskArithmetic(TaskVectorMerge):
    """Basis: origin θ0, direction Σᵢ wᵢ·τᵢ (÷ Σ wᵢ with ``normalize``); coefficient λ."""

    type = "task_arithmetic"
    Spec = TaskArithmeticPath
    help = "θ(λ) = θ0 + λ·Σᵢ wᵢ·(θᵢ − θ0)  (task arithmetic, mergekit task_arithmetic)"
    params = (("weights", "Weights wᵢ (one per model, default 1)"), ("normalize", "Divide by Σ wᵢ"))
    order = 90
