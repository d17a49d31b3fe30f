"""Task plane (001 §4.2, 004 §5): θ(α, β) = θ0 + α·(θA − θ0) + β·(θB − θ0).

Coordinates x = α, y = β; anchors origin (0, 0), a (1, 0), b (0, 1).
"""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from basin.grid import linspace
from basin.paths.base import (
    Anchor,
    BuildContext,
    Built,
    FrozenModel,
    GridRange,
    Resolution,
    TwoD,
    distinct_refs,
    sub_,
)


class TaskPlanePath(FrozenModel):
    """θ(α, β) = θ0 + α·(θA−θ0) + β·(θB−θ0) (001 §4.2, 004 §5)."""

    type: Literal["task_plane"] = "task_plane"
    origin: str
    a: str
    b: str
    resolution: Resolution = (21, 21)
    range: GridRange = ((-1.0, 2.0), (-1.0, 2.0))

    @model_validator(mode="after")
    def _distinct(self) -> TaskPlanePath:
        distinct_refs("a task plane needs three different checkpoints", self.origin, self.a, self.b)
        return self


class TaskPlane(TwoD):
    """Basis: origin θ0, directions (θA − θ0, θB − θ0); coefficients (α, β)."""

    type = "task_plane"
    Spec = TaskPlanePath
    ref_fields = ("origin", "a", "b")
    axis_titles = {"x": "α (along θA − θ0)", "y": "β (along θB − θ0)"}
    help = "θ(α, β) = θ0 + α·(θA−θ0) + β·(θB−θ0)"
    slots = (("origin", "Origin θ0 (pre-trained)"), ("a", "Checkpoint A (α axis)"),
             ("b", "Checkpoint B (β axis)"))
    order = 50
    tensorwise = True
    elementwise = True

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
