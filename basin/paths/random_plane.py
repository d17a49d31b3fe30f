"""Random filter-normalised plane (Li et al. 2018, "Visualizing the Loss Landscape").

θ(x, y) = θ + x·d1 + y·d2 with d1, d2 drawn from N(0, 1) by a seeded
``torch.Generator`` on the CPU, tensor by tensor in **sorted-name order** (the model's
canonical names), so a seed gives one plane on any device and whatever the file layout
(``.bin``, safetensors, shards, tied aliases stored or not). Normalisation of each
direction d for a ≥ 2-D tensor W (reference: ``normalize_direction`` in
``net_plotter.py`` of github.com/tomgoldstein/loss-landscape):

- ``filter``: each *output neuron* (filter) is rescaled, d_i ← d_i·‖W_i‖/(‖d_i‖ + 1e-10).
  The output neuron is axis 0 for ``nn.Linear`` (stored ``(out, in)``), convolutions and
  embeddings, and axis 1 for ``transformers``' ``Conv1D`` (GPT-2; stored ``(in, out)``),
  so a GPT-2 filter is a column, as in Li et al.'s definition;
- ``layer``: the whole tensor, d ← d·‖W‖/(‖d‖ + 1e-10);
- ``none``: left as drawn.

1-D tensors (biases, norm weights) follow the reference's
``normalize_directions_for_weights``: ``ignore: biasbn`` zeroes their directions;
``ignore: none`` sets the direction to the weights themselves (d ← W).
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


def _normalise_(d: torch.Tensor, w: torch.Tensor, how: str, axis: int = 0) -> torch.Tensor:
    """Rescale direction ``d`` for weights ``w`` (≥ 2-D) in place; ``axis`` holds the output neurons."""
    if how == "none":
        return d
    if how == "filter":
        dm = d.movedim(axis, 0)  # a view: scaling it scales d
        dn = dm.reshape(dm.shape[0], -1).norm(dim=1)  # (neurons,)
        wn = w.movedim(axis, 0).reshape(dm.shape[0], -1).float().norm(dim=1)
        dm.mul_((wn / (dn + 1e-10)).view(-1, *([1] * (d.dim() - 1))))
        return d
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
    equal_axes = True

    def key_params(self) -> dict[str, Any]:
        s = self.spec
        return {"type": self.type, "seed": s.seed, "normalization": s.normalization, "ignore": s.ignore}

    def build(self, ctx: BuildContext) -> Built:
        dirs = self._draw(ctx, lambda d, _n: d)
        return self._built(ctx.tensors(self.spec.center),
                           [[dk[n].to(device=ctx.device, dtype=ctx.dtype) for n in ctx.names] for dk in dirs])

    def build_held(self, ctx: BuildContext) -> Built:
        """Each drawn direction kept as held as soon as it is normalised (the same draws)."""
        dirs = self._draw(ctx, ctx.keep)
        origin = [ctx.keep(ctx.one(self.spec.center, n), n) for n in ctx.names]
        return self._built(origin, [[dk[n] for n in ctx.names] for dk in dirs])

    def _draw(self, ctx: BuildContext, keep: Any) -> list[dict[str, torch.Tensor]]:
        """d1, d2 by name, each tensor passed through ``keep(d, name)`` once drawn and normalised."""
        import torch

        sd = ctx.load(self.spec.center)
        g = torch.Generator(device="cpu").manual_seed(int(self.spec.seed))
        drawn: list[dict[str, torch.Tensor]] = [{}, {}]
        for k in range(2):
            for name in sorted(ctx.names):  # canonical order: one plane per seed, any file layout
                w = sd[name]
                d = torch.randn(w.shape, generator=g, dtype=torch.float32)
                if w.dim() <= 1:
                    d = d.zero_() if self.spec.ignore == "biasbn" else w.detach().float().clone()
                else:
                    _normalise_(d, w, self.spec.normalization, ctx.out_axis(name))
                drawn[k][name] = keep(d, name)
        return drawn

    def _built(self, origin: list[torch.Tensor], dirs: list[list[torch.Tensor]]) -> Built:
        (x0, x1), (y0, y1) = self.spec.range
        nx, ny = self.spec.resolution
        return Built(
            origin=origin,
            directions=dirs,
            axes=[linspace(x0, x1, nx), linspace(y0, y1, ny)],
            anchors=[Anchor(self.spec.center, {"x": 0.0, "y": 0.0})],
        )
