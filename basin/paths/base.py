"""What every path type implements, and the tensor-list arithmetic they share.

A path type is one module in :mod:`basin.paths`: a pydantic model of its spec
(``Spec``) and a :class:`PathType` subclass that says everything the rest of Basin
needs to know about it (dimension, checkpoint fields, coordinates, axis titles, help
and form slots) and turns the grid positions of a run into mixing coefficients over
a basis it builds once (see :mod:`basin.space`)::

    θ(point) = origin + Σₖ coeffs(point)ₖ · directionsₖ

To add a path type: write ``basin/paths/<name>.py`` with its ``Spec`` model and a
subclass of :class:`PathType` (or :class:`OneD`) that sets the class attributes and
implements :meth:`PathType.build` and :meth:`PathType.coeffs`. The registry in
:mod:`basin.paths` discovers it; nothing else needs editing.

torch is imported inside the functions that use it: the API and the dashboard import
the path modules (spec validation, ``GET /api/meta``, figures) without torch.
"""

from __future__ import annotations

import builtins
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from basin.errors import DegeneratePlane
from basin.grid import linspace

if TYPE_CHECKING:
    import torch

Tensors = list["torch.Tensor"]

#: One direction's mixing coefficient: one number for every tensor, or one per tensor
#: (a sequence aligned with ``BuildContext.names``) for paths whose tensors move at
#: different rates (SLERP: each tensor's own angle). See :meth:`PathType.coeffs`.
Coeff = float | Sequence[float]

# ---- building blocks of the path spec models ----------------------------------------------

Range = tuple[float, float]
Resolution = tuple[Annotated[int, Field(ge=2, le=201)], Annotated[int, Field(ge=2, le=201)]]


class FrozenModel(BaseModel):
    """Base of every spec model: immutable, unknown fields refused, numbers finite (a NaN or
    an infinite range, margin or weight is refused wherever the spec comes from: the API,
    a YAML file's ``.nan``, Python)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def ordered(r: Range, what: str) -> Range:
    """``r`` if ``r[0] < r[1]``, else a ``ValueError`` naming ``what``."""
    if not r[0] < r[1]:
        raise ValueError(f"{what} must be increasing, got [{r[0]}, {r[1]}]")
    return r


def _ordered_grid(r: tuple[Range, Range]) -> tuple[Range, Range]:
    return (ordered(r[0], "range[0]"), ordered(r[1], "range[1]"))


#: Field types the path specs share (validation included, so each spec declares only its fields).
Points = Annotated[int, Field(ge=2, le=10001)]
AlphaRange = Annotated[Range, AfterValidator(lambda r: ordered(r, "range"))]
GridRange = Annotated[tuple[Range, Range], AfterValidator(_ordered_grid)]


def distinct_refs(message: str, *refs: str) -> None:
    """Planes through repeated checkpoints are degenerate: refuse them before loading anything."""
    if len(set(refs)) < len(refs):
        raise ValueError(f"{message}, got {list(refs)}")


@dataclass(frozen=True)
class Anchor:
    """A checkpoint's position in the path's coordinates."""

    name: str  # the checkpoint reference as written in the spec
    coords: dict[str, float]


@dataclass
class BuildContext:
    """Hands a path the movable tensors of its checkpoints, on the device, in the basis dtype.

    The basis dtype is fp32 whatever the model's dtype (the live model gets each point
    cast once). ``tensors(ref)`` may share memory with a cache: never modify it;
    ``copy(ref)`` is a fresh tensor list the path may overwrite. Without a checkpoint
    cache ``load`` returns a lazy state dict (:class:`basin.checkpoints.LazyStateDict`):
    each call reads the tensors it asks for from disk, one at a time, so no endpoint is
    ever whole in memory beside the basis being built. ``out_axes`` names the
    tensors whose output neurons are not on axis 0 (``Conv1D`` weights, stored
    ``(in, out)``: axis 1), for filter normalisation.
    """

    names: list[str]
    device: torch.device
    dtype: torch.dtype
    load: Callable[[str], Mapping[str, torch.Tensor]]
    out_axes: dict[str, int] = field(default_factory=dict)
    #: a reference to a folder artefact that is not a checkpoint (a subspace's projections) →
    #: its local folder; the resolver's ``artefact`` method where it has one, else ``None``
    artefact: Callable[[str], Any] | None = None
    #: the dtype the basis is *held* in (``None``: :attr:`dtype`, fp32) and where it is held
    #: (``None``: :attr:`device`); see :meth:`keep` and :mod:`basin.holding`
    hold: torch.dtype | None = None
    hold_device: torch.device | None = None
    pin: bool = False
    #: held off the live model's device (``BASIN_HOLD=host``): built tensor by tensor even in fp32
    streamed: bool = False

    def out_axis(self, name: str) -> int:
        """Axis of ``name``'s output neurons (0 unless :attr:`out_axes` says otherwise)."""
        return self.out_axes.get(name, 0)

    def keep(self, x: torch.Tensor, name: str = "") -> torch.Tensor:
        """``x`` (computed in fp32) as it is held: cast to :attr:`hold` on :attr:`hold_device`,
        in pinned host memory when :attr:`pin`. A float16 hold refuses values it cannot
        represent (beyond ±65504) rather than holding ``inf``."""
        from basin.holding import keep

        return keep(x, self.hold or self.dtype, self.hold_device or self.device, pin=self.pin, name=name)

    def held_like(self, shape: Sequence[int]) -> torch.Tensor:
        """An empty tensor of ``shape`` as the basis is held (dtype, device, pinned)."""
        import torch

        dev = self.hold_device or self.device
        return torch.empty(
            tuple(shape), dtype=self.hold or self.dtype, device=dev, pin_memory=self.pin and dev.type == "cpu"
        )

    def span(self, ref: str, name: str, start: int, stop: int) -> torch.Tensor:
        """Elements ``[start, stop)`` of ``ref``'s tensor ``name`` flattened, in the basis dtype on
        :attr:`device` (a fresh tensor; only that span read from a lazily read checkpoint)."""
        from basin.holding import read_span

        sd = self.load(ref)
        x = read_span(sd, name, start, stop)
        return x.to(device=self.device, dtype=self.dtype, copy=not getattr(sd, "fresh", False))

    def one(self, ref: str, name: str) -> torch.Tensor:
        """One tensor of ``ref`` in the basis dtype on :attr:`device` (a fresh tensor the caller
        may overwrite; read from disk alone when the checkpoint is read lazily)."""
        sd = self.load(ref)
        # a lazy state dict reads a fresh tensor per access: no second copy needed
        return sd[name].to(device=self.device, dtype=self.dtype, copy=not getattr(sd, "fresh", False))

    def tensors(self, ref: str) -> Tensors:
        sd = self.load(ref)
        return [sd[n].to(device=self.device, dtype=self.dtype) for n in self.names]

    def copy(self, ref: str) -> Tensors:
        sd = self.load(ref)
        # a lazy state dict reads a fresh tensor per access: no second copy needed
        again = not getattr(sd, "fresh", False)
        return [sd[n].to(device=self.device, dtype=self.dtype, copy=again) for n in self.names]


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
    import torch

    return math.fsum(float(torch.dot(x.reshape(-1).float(), y.reshape(-1).float())) for x, y in zip(xs, ys, strict=False))


def norm(xs: Tensors) -> float:
    """‖x‖₂ of the flattened concatenation."""
    return math.sqrt(dot(xs, xs))


def sub_(xs: Tensors, ys: Tensors) -> Tensors:
    """x ← x − y, in place; returns x."""
    import torch

    torch._foreach_sub_(xs, ys)
    return xs


def plane_basis(origin: Tensors, b: Tensors, c: Tensors, what: str = "plane") -> tuple[Tensors, Tensors, float, float, float]:
    """Orthonormal basis of the plane through three points; ``b``, ``c`` are overwritten.

    e1 = (θB − θA)/‖θB − θA‖, e2 = Gram–Schmidt of θC − θA against e1, normalised.
    Returns ``(e1, e2, xb, xc, yc)``: B sits at (xb, 0), C at (xc, yc), A at (0, 0).
    Raises :class:`DegeneratePlane` when the three are (nearly) collinear.
    """
    import torch

    u = sub_(b, origin)
    xb = norm(u)
    check_plane(what, xb)
    torch._foreach_div_(u, xb)
    v = sub_(c, origin)
    vnorm = norm(v)
    xc = dot(v, u)
    torch._foreach_add_(v, u, alpha=-xc)
    yc = norm(v)
    check_plane(what, xb, vnorm, yc)
    torch._foreach_div_(v, yc)
    return u, v, xb, xc, yc


def check_plane(what: str, xb: float, vnorm: float | None = None, yc: float | None = None) -> None:
    """:class:`DegeneratePlane` when B equals A (``xb`` 0) or C is (nearly) on the line A–B."""
    if xb == 0.0:
        raise DegeneratePlane(f"{what}: the first two checkpoints are identical; no plane through them")
    if vnorm is not None and yc is not None and (vnorm == 0.0 or yc <= 1e-4 * max(vnorm, xb)):
        raise DegeneratePlane(
            f"{what}: the three checkpoints are (nearly) collinear (off-line distance {yc:.3g} "
            f"vs spacing {xb:.3g}); pick a third checkpoint off the line through the first two"
        )


def plane_basis_held(ctx: BuildContext, a: str, b: str, c: str, what: str = "plane") -> tuple[Tensors, Tensors, Tensors, float, float, float]:
    """:func:`plane_basis` through checkpoints ``a``, ``b``, ``c`` one tensor at a time, each
    result kept as held (:meth:`BuildContext.keep`): ``(origin, e1, e2, xb, xc, yc)``.

    Four passes over the tensors, each reading one tensor of each checkpoint at a time (fp32;
    a tensor over :data:`basin.holding.SPAN` elements a flat span at a time):
    ‖θB − θA‖; ‖θC − θA‖ and ⟨θC − θA, e1⟩; the norm of the Gram–Schmidt residual; then θA,
    e1, e2 kept. The same operations per tensor as :func:`plane_basis` (the same numbers
    before the cast), with never more than a few fp32 tensors beside what is held.
    """
    import torch

    from basin.holding import put, shape_of, spans

    def diffs(n: str, s: int, e: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        o = ctx.span(a, n, s, e)
        return o, ctx.span(b, n, s, e).sub_(o), ctx.span(c, n, s, e).sub_(o)

    def fdot(x: torch.Tensor, y: torch.Tensor) -> float:
        return float(torch.dot(x.reshape(-1).float(), y.reshape(-1).float()))

    shapes = {n: shape_of(ctx.load(a), n) for n in ctx.names}
    cuts = {n: spans(math.prod(shapes[n])) for n in ctx.names}  # one span unless the tensor is large
    uu = []
    for n in ctx.names:  # pass 1: ‖θB − θA‖
        for s, e in cuts[n]:
            o = ctx.span(a, n, s, e)
            u = ctx.span(b, n, s, e).sub_(o)
            uu.append(fdot(u, u))
    xb = math.sqrt(math.fsum(uu))
    check_plane(what, xb)
    vv, ve = [], []
    for n in ctx.names:  # pass 2: ‖θC − θA‖ and xc = ⟨θC − θA, e1⟩
        for s, e in cuts[n]:
            _, u, v = diffs(n, s, e)
            vv.append(fdot(v, v))
            ve.append(fdot(v, u.div_(xb)))
    vnorm = math.sqrt(math.fsum(vv))
    xc = math.fsum(ve)
    rr = []
    for n in ctx.names:  # pass 3: the Gram–Schmidt residual's norm yc
        for s, e in cuts[n]:
            _, u, v = diffs(n, s, e)
            v.add_(u.div_(xb), alpha=-xc)  # the residual of θC − θA against e1
            rr.append(fdot(v, v))
    yc = math.sqrt(math.fsum(rr))
    check_plane(what, xb, vnorm, yc)
    origin, e1, e2 = [], [], []
    for n in ctx.names:  # pass 4: keep θA, e1, e2 (each fp32 span dropped once kept)
        shape = shapes[n]
        if len(cuts[n]) > 1:
            held = [ctx.held_like(shape) for _ in range(3)]
        for s, e in cuts[n]:
            o, u, v = diffs(n, s, e)
            u.div_(xb)
            v.add_(u, alpha=-xc).div_(yc)
            if len(cuts[n]) == 1:
                held = [ctx.keep(x.view(shape), n) for x in (o, u, v)]
            else:
                for dst, x in zip(held, (o, u, v), strict=True):
                    put(dst, s, e, x, ctx, n)
            del o, u, v
        origin.append(held[0])
        e1.append(held[1])
        e2.append(held[2])
    return origin, e1, e2, xb, xc, yc


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
    """One kind of path: its spec, what the UI and figures show of it, and its geometry.

    Class attributes (every concrete path type sets them; checked when the class is made):

    - ``type``: the spec's ``path.type``; ``Spec``: the pydantic model of ``path``
      (a :class:`FrozenModel` with ``type: Literal[<type>]``).
    - ``ndim``: 1 (``coords = ("alpha",)``, ``spec.points`` values over ``spec.range``)
      or 2 (``coords = ("x", "y")``, a ``spec.resolution`` grid).
    - ``ref_fields``: the spec fields that hold checkpoint references, in anchor order;
      a field holds one reference or a list. ``ref_literals``: values of those fields
      that are not references (trajectory's ``basis: pca``).
    - ``axis_titles``: ``{coord: title}`` for the figures' axes.
    - ``help``: one line with the formula, for the new-run form.
    - ``slots``: ``[(field, label)]`` the form fills from its checkpoint pickers, in order
      (fields that hold lists get a widget of their own and are not slots).
    - ``list_slot``: ``(field, label)`` of a field holding a list of references that the
      form fills from its multi-checkpoint picker (a merge's ``models``); ``None`` otherwise
      (a ``sequence_field`` uses that picker too).
    - ``params``: ``[(field, label)]`` other spec fields the form shows, typed from the
      spec's JSON schema (numbers, integers, booleans, choices, lists of numbers): a
      merge's ``density``, ``seed``, ``weights``.
    - ``sequence_field``: a reference field listing checkpoints in training order, drawn
      joined as a path over the surface (trajectory's ``checkpoints``); ``None`` otherwise.
    - ``order``: where the form lists it (ascending; ties by ``type``).
    - ``outline``: the figures draw the anchors joined in a closed outline (a simplex's triangle).
    - ``equal_axes``: a plane whose x and y are in the same units (‖·‖₂ in parameter space,
      or two directions normalised alike): the figures draw it with equal axis scales by
      default, so distances and angles between the anchors read true.
    """

    type: ClassVar[str]
    ndim: ClassVar[int]
    Spec: ClassVar[builtins.type[FrozenModel]]  # ``builtins.``: ``type`` above is the ClassVar
    ref_fields: ClassVar[tuple[str, ...]]
    ref_literals: ClassVar[frozenset[str]] = frozenset()
    coords: ClassVar[tuple[str, ...]]
    axis_titles: ClassVar[Mapping[str, str]]
    help: ClassVar[str]
    slots: ClassVar[tuple[tuple[str, str], ...]] = ()
    list_slot: ClassVar[tuple[str, str] | None] = None
    params: ClassVar[tuple[tuple[str, str], ...]] = ()
    sequence_field: ClassVar[str | None] = None
    order: ClassVar[int] = 1000
    equal_axes: ClassVar[bool] = False
    #: a plane whose anchors bound a region (a simplex): the figures join them in a closed outline
    outline: ClassVar[bool] = False
    #: :meth:`build` treats every tensor on its own (no norm, draw or fit across tensors), so
    #: building it over any subset of ``BuildContext.names`` gives those tensors' share of the
    #: basis: low-precision holding builds it a chunk of tensors at a time (:mod:`basin.holding`)
    tensorwise: ClassVar[bool] = False
    #: moreover each *element* on its own (sums and differences of checkpoints only): a large
    #: tensor is built a flat span at a time
    elementwise: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" in cls.__dict__:
            _check_path_class(cls)

    def __init__(self, spec: Any):
        self.spec = spec

    # ---- what the spec says (class level: also used on specs without a live instance) -----

    @classmethod
    def refs_in(cls, path: Any) -> list[str]:
        """Checkpoint references in ``path`` (a ``Spec`` or its dict), anchor order, no duplicates."""
        out: list[str] = []
        for value in cls.roles_in(path).values():
            for ref in [value] if isinstance(value, str) else value:
                if ref not in out:
                    out.append(ref)
        return out

    @classmethod
    def roles_in(cls, path: Any) -> dict[str, str | list[str]]:
        """``{field: ref or [refs]}`` for the reference fields set in ``path`` (a ``Spec`` or dict).

        Fields holding a literal (``basis: pca``) or nothing are left out.
        """
        get = path.get if isinstance(path, Mapping) else lambda f: getattr(path, f, None)
        out: dict[str, str | list[str]] = {}
        for f in cls.ref_fields:
            v = get(f)
            if isinstance(v, str):
                if v not in cls.ref_literals:
                    out[f] = v
            elif isinstance(v, Sequence):
                out[f] = [str(r) for r in v]
        return out

    @classmethod
    def map_refs_in(cls, path: dict[str, Any], checkpoint: Callable[[str], str]) -> dict[str, Any]:
        """``path`` (a dict) with every checkpoint reference rewritten by ``checkpoint``."""
        out = dict(path)
        for f, v in cls.roles_in(path).items():
            out[f] = checkpoint(v) if isinstance(v, str) else [checkpoint(r) for r in v]
        return out

    @classmethod
    def shape_of(cls, path: Any) -> tuple[int, ...]:
        """Grid shape: ``(points,)`` for 1D paths, ``(nx, ny)`` for planes."""
        return (int(path.points),) if cls.ndim == 1 else tuple(int(n) for n in path.resolution)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The spec fields that have defaults, with them (JSON values), e.g. ``points``, ``range``."""
        out: dict[str, Any] = {}
        for name, f in cls.Spec.model_fields.items():
            if name != "type" and not f.is_required():
                out[name] = _jsonable(f.get_default(call_default_factory=True))
        return out

    # ---- geometry ----------------------------------------------------------------------------

    def refs(self) -> list[str]:
        """Checkpoint references it loads; the first is the one out-of-scope tensors stay at.

        By default the ``ref_fields`` in order (:meth:`refs_in`); a path whose origin is
        not its first reference field (trajectory: the final checkpoint) overrides it.
        """
        return self.refs_in(self.spec)

    def validate(self) -> None:
        """Extra checks of the path spec (raise :class:`basin.errors.InvalidSpec`)."""
        return None

    @abstractmethod
    def build(self, ctx: BuildContext) -> Built:
        """Compute the basis (origin, directions), grid axes and anchors once."""

    def build_held(self, ctx: BuildContext) -> Built | None:
        """The basis built tensor by tensor and held as :meth:`BuildContext.keep` holds it
        (low precision, or on the host), equal to :meth:`build`'s cast tensor by tensor;
        ``None`` when the path has no such build (a tensorwise path is chunked instead, any
        other one is built whole in fp32 on the host and then cast)."""
        return None

    @abstractmethod
    def coeffs(self, coords: dict[str, float]) -> Sequence[Coeff]:
        """Mixing coefficients over the directions for one point's coordinates.

        One per direction: a number (the same for every tensor: the fast path,
        ``torch._foreach_add_`` over all tensors at once) or a sequence with one number
        per tensor of ``BuildContext.names`` (a path whose tensors move at different
        rates, such as SLERP's per-tensor angles; computed after :meth:`build`).
        """

    def key_params(self) -> dict[str, Any]:
        """Path parameters (besides checkpoint ids and coords) that change a point's metrics."""
        return {"type": self.type}

    def endpoints(self) -> tuple[str, str] | None:
        """For 1D paths: the two checkpoints whose distance the summary reports."""
        return None


class OneD(PathType):
    """A 1D path over ``spec.range`` with ``spec.points`` values of α (or t)."""

    ndim = 1
    coords = ("alpha",)

    def axes(self) -> list[list[float]]:
        lo, hi = self.spec.range
        return [linspace(lo, hi, self.spec.points)]

    def endpoints(self) -> tuple[str, str]:
        return (self.spec.a, self.spec.b)


class TwoD(PathType):
    """A 2D path over a ``spec.resolution`` grid of (x, y)."""

    ndim = 2
    coords = ("x", "y")

    def coeffs(self, coords: dict[str, float]) -> list[float]:
        return [coords["x"], coords["y"]]


def _jsonable(v: Any) -> Any:
    if isinstance(v, BaseModel):
        return v.model_dump(mode="json")
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    return v


def _check_path_class(cls: type[PathType]) -> None:
    """A path class's declarations agree with each other and with its ``Spec`` (at import)."""
    where = f"path type {cls.__qualname__} ({cls.__module__})"
    missing = [a for a in ("ndim", "Spec", "ref_fields", "coords", "axis_titles", "help")
               if not hasattr(cls, a)]
    if missing:
        raise TypeError(f"{where} does not set {', '.join(missing)}")
    fields = cls.Spec.model_fields
    tag = fields.get("type")
    if tag is None or tag.default != cls.type:
        raise TypeError(f"{where}: {cls.Spec.__name__}.type must default to {cls.type!r}")
    if cls.ndim not in (1, 2) or len(cls.coords) != cls.ndim:
        raise TypeError(f"{where}: ndim {cls.ndim} with coords {cls.coords}")
    if set(cls.axis_titles) != set(cls.coords):
        raise TypeError(f"{where}: axis_titles must name exactly the coords {cls.coords}")
    if cls.sequence_field is not None and cls.sequence_field not in cls.ref_fields:
        raise TypeError(f"{where}: sequence_field {cls.sequence_field!r} is not one of its ref_fields")
    unknown = [f for f in (*cls.ref_fields, *(f for f, _ in cls.slots)) if f not in fields]
    if unknown or not {f for f, _ in cls.slots} <= set(cls.ref_fields):
        raise TypeError(f"{where}: ref_fields / slots name fields {unknown or cls.slots} not in its Spec")
    if cls.list_slot is not None and cls.list_slot[0] not in cls.ref_fields:
        raise TypeError(f"{where}: list_slot {cls.list_slot[0]!r} is not one of its ref_fields")
    bad = [f for f, _ in cls.params if f not in fields or f in cls.ref_fields or f == "type"]
    if bad:
        raise TypeError(f"{where}: params name fields {bad} that are not plain fields of its Spec")
