"""Quadratic Bezier curve (Garipov et al. 2018; 000 eq. 1) with control point θC.

φ(t) = (1−t)²θA + 2t(1−t)θC + t²θB = θA + 2t(1−t)·(θC − θA) + t²·(θB − θA).
"""

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


class BezierPath(FrozenModel):
    """φ(t) = (1−t)²θA + 2t(1−t)θC + t²θB with control point θC (000 eq. 1)."""

    type: Literal["bezier"] = "bezier"
    a: str
    b: str
    control: str
    points: Points = 26
    range: AlphaRange = (0.0, 1.0)


class Bezier(OneD):
    """Basis: origin θA, directions (θC − θA, θB − θA); coefficients (2t(1−t), t²)."""

    type = "bezier"
    Spec = BezierPath
    ref_fields = ("a", "b", "control")
    axis_titles = {"alpha": "t (curve parameter)"}
    help = "φ(t) = (1−t)²θA + 2t(1−t)θC + t²θB (control point θC)"
    slots = (("a", "Checkpoint A (t = 0)"), ("b", "Checkpoint B (t = 1)"), ("control", "Control point θC"))
    order = 20
    tensorwise = True
    elementwise = True

    def build(self, ctx: BuildContext) -> Built:
        a = ctx.tensors(self.spec.a)
        dc = sub_(ctx.copy(self.spec.control), a)
        db = sub_(ctx.copy(self.spec.b), a)
        anchors = [Anchor(self.spec.a, {"alpha": 0.0}), Anchor(self.spec.b, {"alpha": 1.0})]
        return Built(origin=a, directions=[dc, db], axes=self.axes(), anchors=anchors)

    def coeffs(self, coords: dict[str, float]) -> list[float]:
        t = coords["alpha"]
        return [2.0 * t * (1.0 - t), t * t]
