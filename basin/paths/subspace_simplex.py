"""The simplex of three intrinsic vectors in a delta-tuning subspace, decoded through one method (003).

A fitted subspace (``basin subspace fit``, :mod:`basin.subspace`) holds, per training task,
the intrinsic vectors I₁, I₂, I₃ of three methods' solutions. Point (x, y) = (α, β) is

    I(α, β) = α·I₁ + β·I₂ + (1 − α − β)·I₃,    θ(α, β) = Proj↑_decode(I(α, β)),

the triangle α, β ≥ 0, α + β ≤ 1 and the plane through it beyond (``margin``). The
up-projection is Linear → tanh → Linear, so θ is linear in the hidden activations:
θ = b₂ + Σₖ hₖ·W₂[:, k] with h = tanh(W₁·I + b₁). The basis is therefore origin b₂ and
one direction per hidden unit (W₂'s columns, in the decode method's adapter tensors),
and a point's coefficients are h(α, β) — exact, in Basin's one formula for every path.

Runs in ``space: adapter``: the live model is the base with the decode method's adapter
``a`` (any adapter of that method's layout on the subspace's base; it is not on the path,
it only names the layout). Anchors: the three corners, named after their methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, cast

from pydantic import Field

from basin.errors import IncompatibleCheckpoints, InvalidSpec
from basin.grid import linspace
from basin.paths.base import Anchor, BuildContext, Built, FrozenModel, Resolution, TwoD

if TYPE_CHECKING:
    from torch import nn

_METHOD = r"^[A-Za-z0-9_-]{1,64}$"


class SubspaceSimplexPath(FrozenModel):
    """I(α, β) = α·I₁ + β·I₂ + (1−α−β)·I₃ in a fitted subspace, decoded through ``decode``."""

    type: Literal["subspace_simplex"] = "subspace_simplex"
    projections: str = Field(min_length=1, max_length=1000)
    decode: str = Field(pattern=_METHOD)
    a: str
    task: str | None = Field(None, pattern=_METHOD)
    corners: tuple[str, str, str] | None = None
    resolution: Resolution = (21, 21)
    margin: float = Field(0.25, ge=0.0, le=5.0)


class SubspaceSimplex(TwoD):
    """Basis: b₂ and W₂'s columns of the decode method's up-projection; coefficients tanh(W₁·I + b₁)."""

    type = "subspace_simplex"
    Spec = SubspaceSimplexPath
    ref_fields = ("a",)
    axis_titles = {
        "x": "α (weight of the first corner's intrinsic vector)",
        "y": "β (weight of the second corner's)",
    }
    help = "I(α,β) = α·I₁ + β·I₂ + (1−α−β)·I₃ in a fitted delta-tuning subspace, decoded by one method (003)"
    slots = (("a", "An adapter of the decoded method (its layout)"),)
    order = 95
    outline = True

    def build(self, ctx: BuildContext) -> Built:
        import torch

        from basin.subspace.core import Subspace
        from basin.subspace.methods import stored_name

        spec = self.spec
        if ctx.artefact is None:
            raise InvalidSpec(
                "path subspace_simplex: this resolver cannot find a projections artefact"
            )
        sub = Subspace.load(ctx.artefact(spec.projections))
        if spec.decode not in sub.methods:
            raise InvalidSpec(
                f"path subspace_simplex: the subspace has no method {spec.decode!r}; it has "
                f"{', '.join(sub.methods)}"
            )
        corners = list(spec.corners or sub.methods[:3])
        if len(corners) != 3 or len(set(corners)) != 3:
            raise InvalidSpec(
                f"path subspace_simplex: a simplex needs three different methods; the subspace has "
                f"{', '.join(sub.methods)}"
            )
        tasks = sorted(sub.intrinsic)
        task = spec.task or (tasks[0] if len(tasks) == 1 else None)
        if task is None or task not in sub.intrinsic:
            raise InvalidSpec(f"path subspace_simplex: name the task (one of {tasks})")
        missing = [c for c in corners if c not in sub.intrinsic[task]]
        if missing:
            raise InvalidSpec(
                f"path subspace_simplex: task {task!r} has no solution of {missing} in the subspace; "
                f"it has {sorted(sub.intrinsic[task])}"
            )
        lay = sub.layouts[spec.decode]
        offsets, at = {}, 0
        for n, s in zip(lay["names"], lay["shapes"], strict=True):
            k = 1
            for d in s:
                k *= int(d)
            offsets[n] = (at, at + k, tuple(int(d) for d in s))
            at += k
        stored = [stored_name(n) for n in ctx.names]
        if sorted(stored) != sorted(offsets):
            raise IncompatibleCheckpoints(
                f"path subspace_simplex: the live tensors are not method {spec.decode!r}'s adapter tensors (the path "
                f"runs in space: adapter with an adapter of that method as a); e.g. {ctx.names[:2]} vs "
                f"{list(offsets)[:2]}",
                [(n, "not in the method's layout") for n in stored if n not in offsets][:5],
            )
        live = ctx.tensors(spec.a)
        bad = [
            n
            for n, t, s in zip(ctx.names, live, stored, strict=True)
            if tuple(t.shape) != offsets[s][2]
        ]
        if bad:
            raise IncompatibleCheckpoints(
                f"path subspace_simplex: adapter {spec.a!r} does not have method "
                f"{spec.decode!r}'s layout",
                [(n, "shape") for n in bad],
            )
        up = sub.projections[spec.decode].up
        first, last = cast("nn.Linear", up[0]), cast("nn.Linear", up[2])
        w2, b2 = last.weight.detach(), last.bias.detach()

        def tensors(vec: Any) -> list[Any]:
            return [
                vec[offsets[s][0] : offsets[s][1]]
                .reshape(offsets[s][2])
                .to(device=ctx.device, dtype=ctx.dtype)
                .clone()
                for s in stored
            ]

        origin = tensors(b2)
        directions = [tensors(w2[:, k]) for k in range(w2.shape[1])]
        self._w1 = first.weight.detach().to(torch.float64)
        self._b1 = first.bias.detach().to(torch.float64)
        self._corners = [sub.intrinsic[task][c].to(torch.float64) for c in corners]
        nx, ny = spec.resolution
        m = spec.margin
        anchors = [
            Anchor(f"{corners[0]} (I₁)", {"x": 1.0, "y": 0.0}),
            Anchor(f"{corners[1]} (I₂)", {"x": 0.0, "y": 1.0}),
            Anchor(f"{corners[2]} (I₃)", {"x": 0.0, "y": 0.0}),
        ]
        return Built(
            origin=origin,
            directions=directions,
            axes=[linspace(-m, 1 + m, nx), linspace(-m, 1 + m, ny)],
            anchors=anchors,
            extra={"corners": corners, "decode": spec.decode, "task": task},
        )

    def coeffs(self, coords: dict[str, float]) -> list[float]:
        import torch

        a, b = coords["x"], coords["y"]
        i1, i2, i3 = self._corners
        mix = a * i1 + b * i2 + (1.0 - a - b) * i3
        return [float(v) for v in torch.tanh(self._w1 @ mix + self._b1)]

    def key_params(self) -> dict[str, Any]:
        s = self.spec
        return {
            "type": self.type,
            "projections": s.projections,
            "decode": s.decode,
            "task": s.task,
            "corners": list(s.corners) if s.corners else None,
        }
