"""Random filter-normalised plane (Li et al. 2018, "Visualizing the Loss Landscape").

θ(x, y) = θ + x·d1 + y·d2 with d1, d2 drawn from N(0, 1) by a seeded
``torch.Generator`` (on the CPU, tensor by tensor in name order, so a seed gives the
same plane on any device). Normalisation of each direction d for a tensor W:

- ``filter``: each row (dim 0) of a ≥2-D tensor is rescaled, d_i ← d_i·‖W_i‖/‖d_i‖;
- ``layer``: the whole tensor, d ← d·‖W‖/‖d‖;
- ``none``: left as drawn.

``ignore: biasbn`` zeroes the directions of 1-D tensors (biases, norm weights);
otherwise a 1-D tensor is normalised as one filter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from basin.grid import linspace
from basin.paths.base import (
    Anchor,
    BuildContext,
    Built,
    FrozenModel,
    GridRange,
    Resolution,
    TwoD,
)

if TYPE_CHECKING:
    import torch


class RandomPlanePath(FrozenModel):
    """θ + x·d1 + y·d2 with random filter-normalised directions (Li et al. 2018)."""

    type: Literal["random_plane"] = "random_plane"
    center: str
    seed: int = 0
    resolution: Resolution = (21, 21)
    range: GridRange = ((-1.0, 1.0), (-1.0, 1.0))
    normalization: Literal["filter", "layer", "none"] = "filter"
    ignore: Literal["biasbn", "none"] = "biasbn"


def _normalise_(d: torch.Tensor, w: torch.Tensor, how: str) -> torch.Tensor:
    if how == "none":
        return d
    if how == "filter" and d.dim() >= 2:
        dn = d.reshape(d.shape[0], -1).norm(dim=1)  # (rows,)
        wn = w.reshape(w.shape[0], -1).float().norm(dim=1)
        scale = wn / (dn + 1e-10)
        return d.mul_(scale.view(-1, *([1] * (d.dim() - 1))))
    return d.mul_(w.float().norm() / (d.norm() + 1e-10))


class RandomPlane(TwoD):
    """Basis: origin θ (``center``), directions (d1, d2); coefficients (x, y)."""

    type = "random_plane"
    Spec = RandomPlanePath
    ref_fields = ("center",)
    axis_titles = {"x": "x (along d1)", "y": "y (along d2)"}
    help = "θ + x·d1 + y·d2, random filter-normalised directions"
    slots = (("center", "Centre checkpoint"),)
    order = 60

    def key_params(self) -> dict[str, Any]:
        s = self.spec
        return {"type": self.type, "seed": s.seed, "normalization": s.normalization, "ignore": s.ignore}

    def build(self, ctx: BuildContext) -> Built:
        import torch

        sd = ctx.load(self.spec.center)
        g = torch.Generator(device="cpu").manual_seed(int(self.spec.seed))
        dirs: list[list[torch.Tensor]] = []
        for _ in range(2):
            out = []
            for name in ctx.names:
                w = sd[name]
                d = torch.randn(w.shape, generator=g, dtype=torch.float32)
                if w.dim() <= 1 and self.spec.ignore == "biasbn":
                    d.zero_()
                else:
                    _normalise_(d, w, self.spec.normalization)
                out.append(d.to(device=ctx.device, dtype=ctx.dtype))
            dirs.append(out)
        (x0, x1), (y0, y1) = self.spec.range
        nx, ny = self.spec.resolution
        return Built(
            origin=ctx.tensors(self.spec.center),
            directions=dirs,
            axes=[linspace(x0, x1, nx), linspace(y0, y1, ny)],
            anchors=[Anchor(self.spec.center, {"x": 0.0, "y": 0.0})],
        )
