"""Several points per forward pass: ``torch.func.functional_call`` + ``vmap`` over stacked parameter sets.

For a small model on a GPU one point at a time leaves the device idle. :class:`PointStack`
holds the movable tensors of ``k`` points stacked on a leading axis (θᵢ = θ₀ + Σⱼ cᵢⱼ dⱼ, in
the live dtype) and stands in for the live model at point ``i``: ``stack(**batch)`` returns the
``i``-th of the ``k`` outputs that ONE vmapped forward pass per batch computes (the first call
for a batch computes all ``k``; the others read them). An evaluator therefore runs unchanged,
once per point, over the stand-in (:meth:`basin.engine.Landscape.measure_many`).

It keeps the ``k`` outputs of every batch until the last point has read them, so it is used
where outputs are small (classification logits: examples × classes × k); other tasks run one
point at a time. Device memory: ``k`` copies of the movable tensors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

#: Points per forward pass (``BASIN_POINTS_PER_PASS``; 1 = one at a time, the default).
ENV_K = "BASIN_POINTS_PER_PASS"


def points_per_pass_from_env() -> int:
    raw = os.environ.get(ENV_K, "1").strip() or "1"
    try:
        k = int(raw)
    except ValueError:
        raise ValueError(f"{ENV_K}={raw!r} is not a whole number of points") from None
    if k < 1:
        raise ValueError(f"{ENV_K}={raw!r} must be ≥ 1")
    return k


class _Out:
    """What evaluators read of a model output: ``.logits``."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits


class PointStack:
    """``k`` points' movable tensors, stacked; ``stack.at(i)`` then ``stack(**batch)`` = point ``i``'s output."""

    def __init__(self, model: nn.Module, names: Sequence[str], origin: Sequence[torch.Tensor],
                 directions: Sequence[Sequence[torch.Tensor]], coeffs: Sequence[Sequence[float]],
                 dtypes: Sequence[torch.dtype]):
        self.model = model
        self.k = len(coeffs)
        self.params: dict[str, torch.Tensor] = {}
        where = {k: v.device for k, v in model.state_dict(keep_vars=True).items()}
        with torch.no_grad():
            for n, name in enumerate(names):
                rows = []
                dev = where.get(name, origin[n].device)
                for c in coeffs:
                    # in fp32 on the model's device whatever the basis is held in (basin.holding)
                    t = origin[n].to(device=dev, dtype=torch.float32, copy=True)
                    for cj, d in zip(c, directions, strict=True):
                        if cj != 0.0:
                            t.add_(d[n].to(dev), alpha=float(cj))
                    rows.append(t.to(dtypes[n]))  # one cast, as ParamSpace.mix_ does
                self.params[name] = torch.stack(rows)
        self.i = 0
        self._out: dict[int, torch.Tensor] = {}  # id(batch input) → (k, ...) outputs

    def at(self, i: int) -> None:
        self.i = i

    def __call__(self, **batch: torch.Tensor) -> _Out:
        key = id(next(iter(batch.values())))  # the evaluator's batches are the same tensors at every point
        if key not in self._out:
            from torch.func import functional_call, vmap

            def one(p: dict[str, torch.Tensor]) -> torch.Tensor:
                return functional_call(self.model, p, (), batch).logits

            self._out[key] = vmap(one, randomness="error")(self.params)
        return _Out(self._out[key][self.i])

    def close(self) -> None:
        self.params = {}
        self._out = {}


def can_stack(evaluator: Any) -> bool:
    """Whether ``evaluator`` may read a :class:`PointStack` (its outputs are small enough to keep)."""
    from basin.evaluate.classification import ClassificationEvaluator

    return isinstance(evaluator, ClassificationEvaluator)


__all__ = ["ENV_K", "PointStack", "can_stack", "points_per_pass_from_env"]
