"""Polygonal chain with one bend: A→C for t ≤ ½, C→B for t ≥ ½, linear in each half.

θ(t) = θA + 2t·(θC − θA)                      for t ≤ ½
θ(t) = θA + (θC − θA) + (2t − 1)·(θB − θC)    for t ≥ ½
"""

from __future__ import annotations

from typing import Literal

from basin.errors import InvalidSpec
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


class PolychainPath(FrozenModel):
    """A→C for t ≤ ½, C→B for t ≥ ½, linear in each half."""

    type: Literal["polychain"] = "polychain"
    a: str
    b: str
    control: str
    points: Points = 26
    range: AlphaRange = (0.0, 1.0)


class Polychain(OneD):
    """Basis: origin θA, directions (θC − θA, θB − θC); t on [0, 1]."""

    type = "polychain"
    Spec = PolychainPath
    ref_fields = ("a", "b", "control")
    axis_titles = {"alpha": "t (curve parameter)"}
    help = "A → C → B, linear in each half"
    slots = (("a", "Checkpoint A (t = 0)"), ("b", "Checkpoint B (t = 1)"), ("control", "Bend θC"))
    order = 30
    tensorwise = True
    elementwise = True

    def validate(self) -> None:
        lo, hi = self.spec.range
        if lo < 0.0 or hi > 1.0:
            raise InvalidSpec(f"polychain: range must lie inside [0, 1], got [{lo}, {hi}]")

    def build(self, ctx: BuildContext) -> Built:
        a = ctx.tensors(self.spec.a)
        c = ctx.tensors(self.spec.control)
        dac = sub_(ctx.copy(self.spec.control), a)
        dcb = sub_(ctx.copy(self.spec.b), c)
        anchors = [
            Anchor(self.spec.a, {"alpha": 0.0}),
            Anchor(self.spec.control, {"alpha": 0.5}),
            Anchor(self.spec.b, {"alpha": 1.0}),
        ]
        return Built(origin=a, directions=[dac, dcb], axes=self.axes(), anchors=anchors)

    def coeffs(self, coords: dict[str, float]) -> list[float]:
        t = coords["alpha"]
        return [2.0 * t, 0.0] if t <= 0.5 else [1.0, 2.0 * t - 1.0]
