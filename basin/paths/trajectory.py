"""A training trajectory θ_1…θ_T projected onto a plane (Li et al. 2018 §7; 004 fig. 4).

``basis: pca`` — origin θ_final = θ_T; directions are the top-2 principal directions
of D_t = θ_t − θ_T. With G = D Dᵀ (T × T, accumulated tensor by tensor) and the
centring H = I − 11ᵀ/T, the centred Gram H G H = U Λ Uᵀ gives the directions
v_k = Dᵀ H u_k / √λ_k (orthonormal) without a model-size covariance matrix, and the
coordinates of every checkpoint x_t,k = (G H u_k)_t / √λ_k.
``explained_variance`` = (λ1 + λ2) / Σλ; per direction λ_k / Σλ.

``basis: [o, a, b]`` — the plane through three checkpoints (as ``plane``); each θ_t
is projected by least squares (orthonormal basis: x = ⟨θ_t − θ_o, e1⟩, ...), and
``explained_variance`` = Σ(x² + y²) / Σ‖θ_t − θ_o‖² (per direction Σx² / ..., Σy² / ...).

The summary carries the total as ``explained_variance`` and
``trajectory: {explained_variance: [dim1, dim2], total}``.

Anchors are every checkpoint, in order, at its projected coordinates; the grid is
their bounding box widened by ``margin``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from basin.errors import DegeneratePlane
from basin.paths.base import (
    Anchor,
    BuildContext,
    Built,
    FrozenModel,
    Resolution,
    TwoD,
    box_axes,
    distinct_refs,
    dot,
    plane_basis,
    sub_,
)


class TrajectoryPath(FrozenModel):
    """Checkpoints θ_t of one training run projected onto a plane, over its loss surface.

    ``basis="pca"``: the plane through the final checkpoint spanned by the top-2
    principal directions of {θ_t − θ_final}. ``basis=[origin, a, b]``: the plane
    through those three checkpoints (as ``plane``); checkpoints are projected by
    least squares.
    """

    type: Literal["trajectory"] = "trajectory"
    checkpoints: list[str] = Field(min_length=2)
    basis: Literal["pca"] | Annotated[list[str], Field(min_length=3, max_length=3)] = "pca"
    resolution: Resolution = (21, 21)
    margin: float = Field(0.2, ge=0.0, le=5.0)

    @model_validator(mode="after")
    def _distinct(self) -> TrajectoryPath:
        if len(set(self.checkpoints)) < 2:
            raise ValueError("a trajectory needs at least two different checkpoints")
        if isinstance(self.basis, list):
            distinct_refs("a trajectory basis needs three different checkpoints", *self.basis)
        return self


class Trajectory(TwoD):
    """Basis: origin θ_T (pca) or θ_o, orthonormal directions; coefficients (x, y)."""

    type = "trajectory"
    Spec = TrajectoryPath
    ref_fields = ("checkpoints", "basis")
    ref_literals = frozenset({"pca"})
    sequence_field = "checkpoints"
    axis_titles = {"x": "x (direction 1, ‖·‖₂)", "y": "y (direction 2, ‖·‖₂)"}
    help = "training checkpoints projected onto a plane (PCA or three checkpoints), over its surface"
    slots = ()  # the checkpoints list and the basis have widgets of their own
    order = 70
    equal_axes = True

    def _origin(self) -> str:
        b = self.spec.basis
        return self.spec.checkpoints[-1] if b == "pca" else b[0]

    def refs(self) -> list[str]:
        out = [self._origin()]
        extra = [] if self.spec.basis == "pca" else list(self.spec.basis)
        for r in list(self.spec.checkpoints) + extra:
            if r not in out:
                out.append(r)
        return out

    def key_params(self) -> dict[str, Any]:
        return {"type": self.type, "basis": "pca" if self.spec.basis == "pca" else "three"}

    def build(self, ctx: BuildContext) -> Built:
        if self.spec.basis == "pca":
            origin, dirs, coords, ev = self._pca(ctx)
        else:
            origin, dirs, coords, ev = self._three(ctx)
        anchors = [Anchor(r, {"x": x, "y": y}) for r, (x, y) in zip(self.spec.checkpoints, coords, strict=False)]
        axes = box_axes(coords, self.spec.margin, self.spec.resolution)
        total = ev[0] + ev[1]
        return Built(origin=origin, directions=dirs, axes=axes, anchors=anchors,
                     extra={"explained_variance": total,
                            "trajectory": {"explained_variance": list(ev), "total": total}})

    def _pca(self, ctx: BuildContext):
        import torch

        refs = list(self.spec.checkpoints)
        final = refs[-1]
        T = len(refs)
        sds = [ctx.load(r) for r in refs]
        fin = sds[-1]
        G = torch.zeros(T, T, dtype=torch.float64)
        for name in ctx.names:  # tensor by tensor: D (T, numel) for one tensor only
            f = fin[name].to(ctx.device, torch.float32)
            D = torch.stack([sd[name].to(ctx.device, torch.float32).reshape(-1) - f.reshape(-1) for sd in sds])
            G += (D @ D.T).double().cpu()
        H = torch.eye(T, dtype=torch.float64) - 1.0 / T
        lam, U = torch.linalg.eigh(H @ G @ H)  # ascending
        lam, U = lam.flip(0).clamp_min(0.0), U.flip(1)
        total = float(lam.sum())
        if T < 3 or total <= 0.0 or float(lam[1]) <= 1e-10 * total:
            raise DegeneratePlane(
                "trajectory: the checkpoints do not span a plane (need at least 3 checkpoints "
                "not on one line) for basis: pca"
            )
        W = H @ U[:, :2] / lam[:2].sqrt()  # (T, 2): v_k = Dᵀ W[:, k]
        coords_t = G @ W  # (T, 2): ⟨D_t, v_k⟩
        w = W.float()
        dirs: list[list[torch.Tensor]] = [[], []]
        for name in ctx.names:
            f = fin[name].to(ctx.device, torch.float32)
            D = torch.stack([sd[name].to(ctx.device, torch.float32) - f for sd in sds])  # (T, *shape)
            for k in range(2):
                v = torch.tensordot(w[:, k].to(ctx.device), D, dims=1)
                dirs[k].append(v.to(ctx.dtype))
        coords = [(float(x), float(y)) for x, y in coords_t.tolist()]
        return ctx.tensors(final), dirs, coords, (float(lam[0] / total), float(lam[1] / total))

    def _three(self, ctx: BuildContext):
        o, a, b = self.spec.basis
        origin = ctx.tensors(o)
        e1, e2, *_ = plane_basis(origin, ctx.copy(a), ctx.copy(b), what="trajectory basis")
        coords, sx, sy, total = [], 0.0, 0.0, 0.0
        for r in self.spec.checkpoints:
            d = sub_(ctx.copy(r), origin)
            x, y = dot(d, e1), dot(d, e2)
            coords.append((x, y))
            sx += x * x
            sy += y * y
            total += dot(d, d)
        return origin, [e1, e2], coords, ((sx / total, sy / total) if total > 0 else (1.0, 0.0))
