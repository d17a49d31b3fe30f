"""Quadratic Bezier curve (Garipov et al. 2018; 000 eq. 1) with control point θC.

φ(t) = (1−t)²θA + 2t(1−t)θC + t²θB = θA + 2t(1−t)·(θC − θA) + t²·(θB − θA).
"""

from __future__ import annotations

from basin.paths.base import Anchor, BuildContext, Built, OneD, sub_


class Bezier(OneD):
    """Basis: origin θA, directions (θC − θA, θB − θA); coefficients (2t(1−t), t²)."""

    type = "bezier"

    def refs(self) -> list[str]:
        return [self.spec.a, self.spec.b, self.spec.control]

    def build(self, ctx: BuildContext) -> Built:
        a = ctx.tensors(self.spec.a)
        dc = sub_(ctx.copy(self.spec.control), a)
        db = sub_(ctx.copy(self.spec.b), a)
        anchors = [Anchor(self.spec.a, {"alpha": 0.0}), Anchor(self.spec.b, {"alpha": 1.0})]
        return Built(origin=a, directions=[dc, db], axes=self.axes(), anchors=anchors)

    def coeffs(self, coords: dict[str, float]) -> list[float]:
        t = coords["alpha"]
        return [2.0 * t * (1.0 - t), t * t]
