"""Plane through three checkpoints (Garipov et al. 2018, fig. 1).

origin θA; e1 = (θB − θA)/‖θB − θA‖; e2 = Gram–Schmidt of θC − θA against e1,
normalised. Point (x, y) = θA + x·e1 + y·e2, coordinates in parameter units (‖·‖₂).
Anchors sit at their true coordinates: A (0, 0), B (‖θB − θA‖, 0), C (⟨θC−θA, e1⟩, y_C).
The grid is the anchors' bounding box widened by ``margin`` × its size.
"""

from __future__ import annotations

from basin.paths.base import Anchor, BuildContext, Built, PathType, box_axes, plane_basis


class Plane(PathType):
    """Basis: origin θA, orthonormal directions (e1, e2); coefficients (x, y)."""

    type = "plane"
    ndim = 2

    def refs(self) -> list[str]:
        return [self.spec.a, self.spec.b, self.spec.c]

    def build(self, ctx: BuildContext) -> Built:
        a = ctx.tensors(self.spec.a)
        e1, e2, xb, xc, yc = plane_basis(a, ctx.copy(self.spec.b), ctx.copy(self.spec.c))
        pts = {self.spec.a: (0.0, 0.0), self.spec.b: (xb, 0.0), self.spec.c: (xc, yc)}
        anchors = [Anchor(k, {"x": x, "y": y}) for k, (x, y) in pts.items()]
        axes = box_axes(list(pts.values()), self.spec.margin, self.spec.resolution)
        return Built(origin=a, directions=[e1, e2], axes=axes, anchors=anchors)

    def coeffs(self, coords: dict[str, float]) -> list[float]:
        return [coords["x"], coords["y"]]
