"""Linear path: θ(α) = (1−α)·θA + α·θB = θA + α·(θB − θA); α outside [0, 1] extrapolates."""

from __future__ import annotations

from typing import Literal

from basin.paths.base import (
    AlphaRange,
    Anchor,
    BuildContext,
    Built,
    FrozenModel,
    OneD,
    Points,
    sub_,
)


class LinearPath(FrozenModel):
    """θ(α) = (1−α)·θA + α·θB; α outside [0, 1] extrapolates."""

    type: Literal["linear"] = "linear"
    a: str
    b: str
    points: Points = 26
    range: AlphaRange = (0.0, 1.0)


class Linear(OneD):
    """Basis: origin θA, one direction θB − θA; coefficient α."""

    type = "linear"
    Spec = LinearPath
    ref_fields = ("a", "b")
    axis_titles = {"alpha": "α"}
    help = "θ(α) = (1−α)·θA + α·θB"
    slots = (("a", "Checkpoint A (α = 0)"), ("b", "Checkpoint B (α = 1)"))
    order = 10
    tensorwise = True
    elementwise = True

    def build(self, ctx: BuildContext) -> Built:
        a = ctx.tensors(self.spec.a)
        d = sub_(ctx.copy(self.spec.b), a)  # θB − θA
        anchors = [Anchor(self.spec.a, {"alpha": 0.0}), Anchor(self.spec.b, {"alpha": 1.0})]
        return Built(origin=a, directions=[d], axes=self.axes(), anchors=anchors)

    def coeffs(self, coords: dict[str, float]) -> list[float]:
        return [coords["alpha"]]
