"""Several points per forward pass: ``torch.func.functional_call`` + ``vmap`` over stacked parameter sets.

For a small model on a GPU one point at a time leaves the device idle. :class:`PointStack`
holds the movable tensors of ``k`` points stacked on a leading axis (θᵢ = θ₀ + Σⱼ cᵢⱼ dⱼ,
mixed in fp32 and cast once to the live dtype, as :meth:`basin.space.ParamSpace.mix_` does)
and ``stack.forward(batch)`` runs ONE vmapped forward pass of the live model over them: the
``k`` points' logits, ``(k, ...)``. :meth:`basin.evaluate.base.Evaluator.evaluate_many` walks the
batches once, turns each point's logits into that task's small per-batch values at once
(classification logits, per-row NLL) and drops the ``k``-fold logits before the next batch, so
device memory is ``k`` copies of the movable tensors plus one batch's ``k`` outputs.

How many points a pass takes (``k``) is :func:`points_per_pass`: ``BASIN_POINTS_PER_PASS``
(a whole number, or ``auto``, the default). ``auto`` is 1 on the CPU (measured: it does not
win there, see docs/engine.md) and on CUDA a width from the movable parameter count and the
free device memory (:func:`auto_points_per_pass`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
from torch import nn

#: Points per forward pass (``BASIN_POINTS_PER_PASS``: ``auto`` — the default — or a whole number ≥ 1).
ENV_K = "BASIN_POINTS_PER_PASS"
#: The widest pass ``auto`` picks.
AUTO_MAX_K = 8
#: ``auto`` stacks points only for models with at most this many movable parameters: beyond it
#: one point already fills a GPU's arithmetic units.
AUTO_MAX_PARAMS = 400_000_000
#: ``auto`` spends at most this share of the free device memory on the extra stacked copies.
AUTO_MEMORY_SHARE = 0.25


def points_per_pass_from_env() -> int | None:
    """``BASIN_POINTS_PER_PASS`` as a number, or ``None`` for ``auto`` (unset, empty or ``auto``)."""
    raw = os.environ.get(ENV_K, "auto").strip().lower() or "auto"
    if raw == "auto":
        return None
    try:
        k = int(raw)
    except ValueError:
        raise ValueError(
            f"{ENV_K}={raw!r} is neither 'auto' nor a whole number of points"
        ) from None
    if k < 1:
        raise ValueError(f"{ENV_K}={raw!r} must be ≥ 1")
    return k


def auto_points_per_pass(
    device: torch.device, movable_params: int, bytes_per_param: int, free_bytes: int | None = None
) -> int:
    """The width ``auto`` picks: 1 on the CPU or for a model past :data:`AUTO_MAX_PARAMS` movable
    parameters; on CUDA up to :data:`AUTO_MAX_K`, as many extra stacked copies of the movable
    tensors as fit in :data:`AUTO_MEMORY_SHARE` of the free device memory (``free_bytes``, else
    ``torch.cuda.mem_get_info``)."""
    if device.type != "cuda" or movable_params <= 0 or movable_params > AUTO_MAX_PARAMS:
        return 1
    if free_bytes is None:
        free_bytes, _ = torch.cuda.mem_get_info(device)
    per_point = movable_params * max(int(bytes_per_param), 1)
    return int(max(1, min(AUTO_MAX_K, (AUTO_MEMORY_SHARE * free_bytes) // per_point)))


def _as_list(c: float | Sequence[float], n: int) -> list[float]:
    return [float(x) for x in c] if isinstance(c, Sequence) else [float(c)] * n


class PointStack:
    """``k`` points' movable tensors, stacked; :meth:`forward` = all ``k`` points' logits of a batch.

    ``coeffs[i]`` are point ``i``'s coefficients over ``directions`` (a number each, or one
    number per movable tensor: SLERP). ``origin``/``directions`` may be held in any floating
    dtype and on the host: each tensor is mixed in fp32 on ``device`` and cast to ``dtypes[n]``.
    """

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str],
        origin: Sequence[torch.Tensor],
        directions: Sequence[Sequence[torch.Tensor]],
        coeffs: Sequence[Sequence[float | Sequence[float]]],
        dtypes: Sequence[torch.dtype],
        device: torch.device | None = None,
    ):
        self.model = model
        self.k = len(coeffs)
        per = [[_as_list(c, len(names)) for c in cs] for cs in coeffs]  # point → direction → tensor
        self.params: dict[str, torch.Tensor] = {}
        # in fp32 on the model's device whatever the basis is held in and where (basin.holding)
        where = {k: v.device for k, v in model.state_dict(keep_vars=True).items()}
        with torch.no_grad():
            for n, name in enumerate(names):
                dev = device if device is not None else where.get(name, origin[n].device)
                o = origin[n].to(device=dev, dtype=torch.float32)
                ds = [d[n].to(device=dev, dtype=torch.float32) for d in directions]
                rows = []
                for cs in per:
                    t = o.clone()
                    for cj, d in zip(cs, ds, strict=True):
                        if cj[n] != 0.0:
                            t.add_(d, alpha=cj[n])
                    rows.append(t.to(dtypes[n]))  # the one cast, as ParamSpace.mix_ does
                self.params[name] = torch.stack(rows)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(k, *logits.shape)``: the model's logits on ``batch`` at each of the ``k`` points."""
        from torch.func import functional_call, vmap

        def one(p: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(self.model, p, (), batch).logits

        return vmap(one, randomness="error")(self.params)

    def close(self) -> None:
        self.params = {}


__all__ = ["AUTO_MAX_K", "ENV_K", "PointStack", "auto_points_per_pass", "points_per_pass_from_env"]
