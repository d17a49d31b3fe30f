"""Linear path: θ(α) = (1−α)·θA + α·θB = θA + α·(θB − θA); α outside [0, 1] extrapolates."""

from __future__ import annotations

from basin.paths.base import Anchor, BuildContext, Built, OneD, sub_


class Linear(OneD):
    """Basis: origin θA, one direction θB − θA; coefficient α."""

    type = "linear"

    def refs(self) -> list[str]:
        return [self.spec.a, self.spec.b]

    def build(self, ctx: BuildContext) -> Built:
        a = ctx.tensors(self.spec.a)
        d = sub_(ctx.copy(self.spec.b), a)  # θB − θA
        anchors = [Anchor(self.spec.a, {"alpha": 0.0}), Anchor(self.spec.b, {"alpha": 1.0})]
        return Built(origin=a, directions=[d], axes=self.axes(), anchors=anchors)

    def coeffs(self, coords: dict[str, float]) -> list[float]:
        return [coords["alpha"]]
