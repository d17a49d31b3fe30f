"""What every path type implements, and the tensor-list arithmetic they share.

A path type turns the grid positions of a run into mixing coefficients over a
basis it builds once (see :mod:`basin.space`)::

    θ(point) = origin + Σₖ coeffs(point)ₖ · directionsₖ

To add a path type: subclass :class:`PathType`, implement :meth:`PathType.build`
and :meth:`PathType.coeffs`, and register the class in ``basin.paths.PATHS``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from basin.errors import DegeneratePlane
from basin.grid import linspace

Tensors = list[torch.Tensor]


@dataclass(frozen=True)
class Anchor:
    """A checkpoint's position in the path's coordinates."""

    name: str  # the checkpoint reference as written in the spec
    coords: dict[str, float]


@dataclass
class BuildContext:
    """Hands a path the movable tensors of its checkpoints, on the device, in the working dtype.

    ``tensors(ref)`` may share memory with a cache: never modify it; ``copy(ref)`` is
    a fresh tensor list the path may overwrite.
    """

    names: list[str]
    device: torch.device
    dtype: torch.dtype
    load: Callable[[str], dict[str, torch.Tensor]]

    def tensors(self, ref: str) -> Tensors:
        sd = self.load(ref)
        return [sd[n].to(device=self.device, dtype=self.dtype) for n in self.names]

    def copy(self, ref: str) -> Tensors:
        sd = self.load(ref)
        return [sd[n].to(device=self.device, dtype=self.dtype, copy=True) for n in self.names]


@dataclass
class Built:
    """A path's basis, grid axes and anchors."""

    origin: Tensors
    directions: list[Tensors]
    axes: list[list[float]]  # [alphas] or [xs, ys]
    anchors: list[Anchor]
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. explained_variance


# ---- tensor-list arithmetic (accumulated in Python floats, tensor by tensor) -------------


def dot(xs: Tensors, ys: Tensors) -> float:
    """⟨x, y⟩ over the flattened concatenation of the tensor lists."""
    return math.fsum(float(torch.dot(x.reshape(-1).float(), y.reshape(-1).float())) for x, y in zip(xs, ys, strict=False))


def norm(xs: Tensors) -> float:
    """‖x‖₂ of the flattened concatenation."""
    return math.sqrt(dot(xs, xs))


def sub_(xs: Tensors, ys: Tensors) -> Tensors:
    """x ← x − y, in place; returns x."""
    torch._foreach_sub_(xs, ys)
    return xs


def plane_basis(origin: Tensors, b: Tensors, c: Tensors, what: str = "plane") -> tuple[Tensors, Tensors, float, float, float]:
    """Orthonormal basis of the plane through three points; ``b``, ``c`` are overwritten.

    e1 = (θB − θA)/‖θB − θA‖, e2 = Gram–Schmidt of θC − θA against e1, normalised.
    Returns ``(e1, e2, xb, xc, yc)``: B sits at (xb, 0), C at (xc, yc), A at (0, 0).
    Raises :class:`DegeneratePlane` when the three are (nearly) collinear.
    """
    u = sub_(b, origin)
    xb = norm(u)
    if xb == 0.0:
        raise DegeneratePlane(f"{what}: the first two checkpoints are identical; no plane through them")
    torch._foreach_div_(u, xb)
    v = sub_(c, origin)
    vnorm = norm(v)
    xc = dot(v, u)
    torch._foreach_add_(v, u, alpha=-xc)
    yc = norm(v)
    if vnorm == 0.0 or yc <= 1e-4 * max(vnorm, xb):
        raise DegeneratePlane(
            f"{what}: the three checkpoints are (nearly) collinear (off-line distance {yc:.3g} "
            f"vs spacing {xb:.3g}); pick a third checkpoint off the line through the first two"
        )
    torch._foreach_div_(v, yc)
    return u, v, xb, xc, yc


def box_axes(points: Sequence[tuple[float, float]], margin: float, resolution: Sequence[int]) -> list[list[float]]:
    """Grid axes over the points' bounding box widened by ``margin`` × its size on each side."""
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    w, h = x1 - x0, y1 - y0
    side = max(w, h, 1e-12)
    w = w or side
    h = h or side
    return [
        linspace(x0 - margin * w, x1 + margin * w, resolution[0]),
        linspace(y0 - margin * h, y1 + margin * h, resolution[1]),
    ]


class PathType(ABC):
    """One kind of path: which checkpoints it needs, its basis, and coefficients per point."""

    type: ClassVar[str]
    ndim: ClassVar[int]  # 1 (coords {"alpha"}) or 2 (coords {"x", "y"})

    def __init__(self, spec: Any):
        self.spec = spec

    @abstractmethod
    def refs(self) -> list[str]:
        """Checkpoint references it loads; the first is the one out-of-scope tensors stay at."""

    def validate(self) -> None:
        """Extra checks of the path spec (raise :class:`basin.errors.InvalidSpec`)."""
        return None

    @abstractmethod
    def build(self, ctx: BuildContext) -> Built:
        """Compute the basis (origin, directions), grid axes and anchors once."""

    @abstractmethod
    def coeffs(self, coords: dict[str, float]) -> list[float]:
        """Mixing coefficients over the directions for one point's coordinates."""

    def key_params(self) -> dict[str, Any]:
        """Path parameters (besides checkpoint ids and coords) that change a point's metrics."""
        return {"type": self.type}

    def endpoints(self) -> tuple[str, str] | None:
        """For 1D paths: the two checkpoints whose distance the summary reports."""
        return None


class OneD(PathType):
    """A 1D path over ``spec.range`` with ``spec.points`` values of α (or t)."""

    ndim = 1

    def axes(self) -> list[list[float]]:
        lo, hi = self.spec.range
        return [linspace(lo, hi, self.spec.points)]

    def endpoints(self) -> tuple[str, str]:
        return (self.spec.a, self.spec.b)
