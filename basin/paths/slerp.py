"""SLERP between two checkpoints, per tensor (Shoemake 1985; mergekit's ``slerp``), over t.

Each tensor moves along the great circle between its two values, at its own angle:
with Ω the angle between the flattened tensors a and b (cos Ω = ⟨a/‖a‖, b/‖b‖⟩),

    θ(t) = sin((1−t)·Ω)/sin Ω · a + sin(t·Ω)/sin Ω · b

and linearly, (1−t)·a + t·b, where |cos Ω| > 0.9995 (nearly colinear or antipodal: the
formula is ill-conditioned there). A norm ≤ 1e-8 is taken as 1 before the dot product.
This mirrors ``slerp`` in ``mergekit/merge_methods/slerp.py`` (arcee-ai/mergekit 0.1.5:
``dot_threshold=0.9995``, ``eps=1e-8``, a the base model at t = 0, b at t = 1), which
works on one whole tensor per output; Basin computes the angles in float64 (mergekit in
float32), so the two agree to float32 rounding.

Not linear in t, and each tensor has its own coefficients: the basis is origin a with
directions (a, b − a), and :meth:`Slerp.coeffs` gives per tensor
(c_a + c_b − 1, c_b) — 0 and t for the tensors that fall back to linear, exactly the
linear path's mix there. The angles are computed once, in ``build``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import model_validator

from basin.paths.base import (
    AlphaRange,
    Anchor,
    BuildContext,
    Built,
    Coeff,
    FrozenModel,
    OneD,
    Points,
    distinct_refs,
    sub_,
)

#: mergekit's constants (``slerp(..., dot_threshold=0.9995, eps=1e-8)``)
DOT_THRESHOLD = 0.9995
EPS = 1e-8


class SlerpPath(FrozenModel):
    """Per-tensor spherical interpolation, θ(t) = sin((1−t)Ω)/sin Ω·θA + sin(tΩ)/sin Ω·θB."""

    type: Literal["slerp"] = "slerp"
    a: str
    b: str
    points: Points = 26
    range: AlphaRange = (0.0, 1.0)

    @model_validator(mode="after")
    def _distinct(self) -> SlerpPath:
        distinct_refs("SLERP needs two different checkpoints", self.a, self.b)
        return self


def angle(a: Any, b: Any) -> float | None:
    """Ω between two tensors (flattened) as mergekit's ``slerp`` finds it, or ``None`` where it
    interpolates linearly (|cos Ω| > :data:`DOT_THRESHOLD`, or an empty tensor)."""
    import torch

    if a.numel() == 0:
        return None
    x = a.reshape(-1).to(torch.float64)
    y = b.reshape(-1).to(torch.float64)
    na, nb = float(torch.linalg.vector_norm(x)), float(torch.linalg.vector_norm(y))
    na = na if na > EPS else 1.0
    nb = nb if nb > EPS else 1.0
    dot = max(-1.0, min(1.0, float(torch.dot(x / na, y / nb))))
    if abs(dot) > DOT_THRESHOLD:
        return None
    return math.acos(dot)


def slerp_coeffs(t: float, omega: float | None) -> tuple[float, float]:
    """(c_a, c_b) with θ = c_a·a + c_b·b at ``t`` for a tensor of angle ``omega``."""
    if omega is None:
        return 1.0 - t, t
    s = math.sin(omega)
    return math.sin((1.0 - t) * omega) / s, math.sin(t * omega) / s


class Slerp(OneD):
    """Basis: origin θA, directions (θA, θB − θA); per-tensor coefficients from each angle."""

    type = "slerp"
    Spec = SlerpPath
    ref_fields = ("a", "b")
    axis_titles = {"alpha": "t"}
    help = "θ(t) = sin((1−t)Ω)/sin Ω·θA + sin(tΩ)/sin Ω·θB, Ω per tensor (mergekit slerp)"
    slots = (("a", "Checkpoint A (base, t = 0)"), ("b", "Checkpoint B (t = 1)"))
    order = 12

    def __init__(self, spec: Any):
        super().__init__(spec)
        self.angles: list[float | None] = []

    def build(self, ctx: BuildContext) -> Built:
        a = ctx.tensors(self.spec.a)
        b = ctx.copy(self.spec.b)
        self.angles = [angle(x, y) for x, y in zip(a, b, strict=True)]
        d = sub_(b, a)  # θB − θA
        anchors = [Anchor(self.spec.a, {"alpha": 0.0}), Anchor(self.spec.b, {"alpha": 1.0})]
        # directions[0] is the origin list itself: no extra memory over the linear path
        return Built(origin=a, directions=[a, d], axes=self.axes(), anchors=anchors)

    def coeffs(self, coords: dict[str, float]) -> list[Coeff]:
        t = float(coords["alpha"])
        if not self.angles:
            raise RuntimeError("slerp: coeffs() before build()")
        on_a, on_d = [], []
        for omega in self.angles:
            ca, cb = slerp_coeffs(t, omega)
            on_a.append(0.0 if omega is None else ca + cb - 1.0)
            on_d.append(cb)
        return [on_a, on_d]

    def key_params(self) -> dict[str, Any]:
        return {"type": self.type, "dot_threshold": DOT_THRESHOLD, "eps": EPS}
