"""Plane through three checkpoints (Garipov et al. 2018, fig. 1).

origin θA; e1 = (θB − θA)/‖θB − θA‖; e2 = Gram–Schmidt of θC − θA against e1,
normalised. Point (x, y) = θA + x·e1 + y·e2, coordinates in parameter units (‖·‖₂).
Anchors sit at their true coordinates: A (0, 0), B (‖θB − θA‖, 0), C (⟨θC−θA, e1⟩, y_C).
The grid is the anchors' bounding box widened by ``margin`` × its size.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from basin.paths.base import (
    Anchor,
    BuildContext,
    Built,
    FrozenModel,
    Resolution,
    Tensors,
    TwoD,
    box_axes,
    distinct_refs,
    plane_basis,
    plane_basis_held,
)


class PlanePath(FrozenModel):
    """Plane through three checkpoints: origin θA, orthonormal e1 ∥ θB−θA, e2 from θC−θA.

    The grid covers the three anchors' bounding box, widened by ``margin`` × its size.
    """

    type: Literal["plane"] = "plane"
    a: str
    b: str
    c: str
    resolution: Resolution = (21, 21)
    margin: float = Field(0.2, ge=0.0, le=5.0)

    @model_validator(mode="after")
    def _distinct(self) -> PlanePath:
        distinct_refs("a plane needs three different checkpoints", self.a, self.b, self.c)
        return self


class Plane(TwoD):
    """Basis: origin θA, orthonormal directions (e1, e2); coefficients (x, y)."""

    type = "plane"
    Spec = PlanePath
    ref_fields = ("a", "b", "c")
    axis_titles = {"x": "x (along θB − θA, ‖·‖₂)", "y": "y (towards θC, ‖·‖₂)"}
    help = "the plane through three checkpoints (origin A, e1 ∥ B−A, e2 towards C)"
    slots = (("a", "Checkpoint A (origin)"), ("b", "Checkpoint B"), ("c", "Checkpoint C"))
    order = 40
    equal_axes = True

    def build(self, ctx: BuildContext) -> Built:
        a = ctx.tensors(self.spec.a)
        e1, e2, xb, xc, yc = plane_basis(a, ctx.copy(self.spec.b), ctx.copy(self.spec.c))
        return self._built(a, e1, e2, xb, xc, yc)

    def build_held(self, ctx: BuildContext) -> Built:
        return self._built(*plane_basis_held(ctx, self.spec.a, self.spec.b, self.spec.c))

    def _built(self, a: Tensors, e1: Tensors, e2: Tensors, xb: float, xc: float, yc: float) -> Built:
        pts = {self.spec.a: (0.0, 0.0), self.spec.b: (xb, 0.0), self.spec.c: (xc, yc)}
        anchors = [Anchor(k, {"x": x, "y": y}) for k, (x, y) in pts.items()]
        axes = box_axes(list(pts.values()), self.spec.margin, self.spec.resolution)
        return Built(origin=a, directions=[e1, e2], axes=axes, anchors=anchors)
