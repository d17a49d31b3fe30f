"""Task plane (001 §4.2, 004 §5): θ(α, β) = θ0 + α·(θA − θ0) + β·(θB − θ0).

Coordinates x = α, y = β; anchors origin (0, 0), a (1, 0), b (0, 1).
"""

from __future__ import annotations

from basin.grid import linspace
from basin.paths.base import Anchor, BuildContext, Built, PathType, sub_


class TaskPlane(PathType):
    """Basis: origin θ0, directions (θA − θ0, θB − θ0); coefficients (α, β)."""

    type = "task_plane"
    ndim = 2

    def refs(self) -> list[str]:
        return [self.spec.origin, self.spec.a, self.spec.b]

    def build(self, ctx: BuildContext) -> Built:
        o = ctx.tensors(self.spec.origin)
        da = sub_(ctx.copy(self.spec.a), o)
        db = sub_(ctx.copy(self.spec.b), o)
        (x0, x1), (y0, y1) = self.spec.range
        nx, ny = self.spec.resolution
        anchors = [
            Anchor(self.spec.origin, {"x": 0.0, "y": 0.0}),
            Anchor(self.spec.a, {"x": 1.0, "y": 0.0}),
            Anchor(self.spec.b, {"x": 0.0, "y": 1.0}),
        ]
        return Built(origin=o, directions=[da, db], axes=[linspace(x0, x1, nx), linspace(y0, y1, ny)],
                     anchors=anchors)

    def coeffs(self, coords: dict[str, float]) -> list[float]:
        return [coords["x"], coords["y"]]
