"""How a run's basis is held: its precision (fp32 masters, or bf16/fp16) and where (device or host).

A path's basis is an origin θ₀ and directions d₁…d_K (:mod:`basin.space`). With ``dtype:
float32`` (and ``auto``, whose parameters are fp32) they are fp32 on the run's device, built
and mixed exactly as before. With ``dtype: bfloat16`` / ``float16`` they are **held in that
dtype**: each tensor is computed in fp32 (from the checkpoints as stored) and rounded once
when it is kept, and every point is mixed tensor by tensor in fp32
(:meth:`basin.space.ParamSpace.mix_`) before the one cast into the live model. The error
against fp32 masters, per element of every mixed tensor before that cast::

    |θ_held(c) − θ_fp32(c)| ≤ u · (|θ₀| + Σₖ |cₖ|·|dₖ|)   (+ fp32 rounding of the sum)

with ``u`` the unit roundoff of the held dtype: 2⁻⁸ for bf16; 2⁻¹¹ for fp16, plus 2⁻²⁵
absolute where a value falls below fp16's normal range (6.1e-5). A value beyond ±65504 cannot
be held in fp16 and is refused (:class:`basin.errors.InvalidSpec`) rather than held as ``inf``.

Building: a path whose build treats each tensor on its own (``PathType.tensorwise``: linear,
Bezier, polychain, task plane, the task-vector merges) is built one tensor at a time and each
piece kept at once, so the fp32 basis never exists whole; a plane and a random plane have a
tensor-by-tensor build of their own (``PathType.build_held``); any other path (trajectory,
SLERP) is built whole in fp32 on the host and then cast tensor by tensor (its host peak is
the fp32 basis; the device only ever sees the held one).

Where: ``BASIN_HOLD=device`` keeps the basis on the run's device; ``host`` keeps it in host
memory (pinned when CUDA is present) and streams it to the device tensor by tensor at each
point (the device then holds the live model and one tensor's fp32 scratch); ``auto`` (the
default) holds it on the host only when a CUDA device has too little free memory for it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch

from basin.errors import InvalidSpec

# (a leaf module: basin.space and basin.paths import it, so it names their types loosely)
BuildContext = Any  # basin.paths.base.BuildContext
Built = Any  # basin.paths.base.Built
PathType = Any  # basin.paths.base.PathType

#: where the basis is held: ``auto`` (default), ``device`` or ``host``
ENV_HOLD = "BASIN_HOLD"
#: unit roundoff of each held dtype (half a unit in the last place, relative)
UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
#: fp16's absolute rounding below its normal range (half the smallest subnormal step)
FP16_SUBNORMAL_ABS = 2.0**-25
#: of a CUDA device's free memory, the share the held basis may take before ``auto`` streams it
DEVICE_SHARE = 0.9


#: a tensor of more elements than this is built, mixed and compared a flat span at a time, so
#: no fp32 (or float64) copy of a whole embedding matrix sits beside the held basis
SPAN = 1 << 24


def spans(numel: int) -> list[tuple[int, int]]:
    """``[(start, stop)]`` cutting ``numel`` flattened elements into pieces of at most :data:`SPAN`."""
    return [(s, min(s + SPAN, numel)) for s in range(0, max(numel, 1), SPAN)]


def read_span(sd: Mapping[str, torch.Tensor], name: str, start: int, stop: int) -> torch.Tensor:
    """Elements ``[start, stop)`` of ``sd[name]`` flattened: only that span read from a lazy
    state dict (:meth:`basin.checkpoints.LazyStateDict.span`); a view of a resident one."""
    span = getattr(sd, "span", None)
    if span is not None:
        return span(name, start, stop)
    return sd[name].reshape(-1)[start:stop]


def held_dtype(param_dtype: torch.dtype) -> torch.dtype:
    """The dtype a run's basis is held in: bf16 / fp16 for such a model, else fp32."""
    return param_dtype if param_dtype in (torch.bfloat16, torch.float16) else torch.float32


def hold_from_env() -> str:
    raw = os.environ.get(ENV_HOLD, "auto").strip().lower() or "auto"
    if raw not in ("auto", "device", "host"):
        raise InvalidSpec(f"{ENV_HOLD}={raw!r}: expected auto, device or host")
    return raw


def on_host(where: str, device: torch.device, basis_bytes: int) -> bool:
    """Whether the basis is held on the host: ``host``; or ``auto`` on a CUDA device whose free
    memory (beside the live model, already there) is under ``basis_bytes / DEVICE_SHARE``."""
    if where == "host":
        return True
    if where == "device" or device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return basis_bytes > DEVICE_SHARE * free


def keep(
    x: torch.Tensor, dtype: torch.dtype, device: torch.device, *, pin: bool = False, name: str = ""
) -> torch.Tensor:
    """``x`` cast once to ``dtype`` on ``device`` (pinned host memory when ``pin``)."""
    y = x.to(device=device, dtype=dtype)
    if (
        dtype == torch.float16
        and x.is_floating_point()
        and not bool(torch.isfinite(y).all())
        and bool(torch.isfinite(x).all())
    ):
        raise InvalidSpec(
            f"dtype float16 cannot hold tensor {name or '?'} of the basis: it has values beyond "
            "±65504 (use dtype bfloat16, which has fp32's range)"
        )
    if pin and y.device.type == "cpu" and not y.is_pinned():
        y = y.pin_memory()
    return y


def build_basis(path: PathType, ctx: BuildContext) -> Built:
    """``path``'s basis, held as ``ctx`` says (``ctx.hold``, ``ctx.hold_device``, ``ctx.pin``).

    fp32 held on the build device: :meth:`PathType.build` itself (unchanged). Otherwise the
    path's own held build, else tensor by tensor (tensorwise paths), else whole in fp32 on
    the host and cast tensor by tensor.
    """
    hold = ctx.hold or ctx.dtype
    hdev = ctx.hold_device or ctx.device
    if hold == ctx.dtype and hdev == ctx.device and not ctx.streamed:
        return path.build(ctx)
    built = path.build_held(ctx)
    if built is not None:
        return built
    if path.tensorwise:
        return _tensorwise(path, ctx)
    whole = path.build(replace(ctx, device=torch.device("cpu")))
    return _cast(whole, ctx)


def _tensorwise(path: PathType, ctx: BuildContext) -> Built:
    """Build ``path`` over one tensor at a time, keeping each piece as it comes (a large tensor
    of an ``elementwise`` path a flat span at a time, written into its held tensor)."""
    first: Built | None = None
    origin: list[torch.Tensor] = []
    directions: list[list[torch.Tensor]] = []
    for name in ctx.names:
        sub = replace(ctx, names=[name], out_axes={name: ctx.out_axis(name)})
        shape = _shape(ctx, path, name) if path.elementwise else None
        if shape is not None and _numel(shape) > SPAN:
            kept = _by_spans(path, sub, name, shape)
        else:
            kept = _cast(path.build(sub), ctx)
        if first is None:
            first = kept
            directions = [[] for _ in kept.directions]
        origin += kept.origin
        for ds, d in zip(directions, kept.directions, strict=True):
            ds += d
    if first is None:
        raise ValueError("no movable tensors to build a basis over")
    return replace(first, origin=origin, directions=directions)


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for x in shape:
        n *= int(x)
    return n


def shape_of(sd: Mapping[str, torch.Tensor], name: str) -> tuple[int, ...]:
    """``sd[name]``'s shape, from a lazy state dict's header without reading it."""
    meta = getattr(sd, "meta", None)
    return tuple(meta(name)[0]) if meta is not None else tuple(sd[name].shape)


def _shape(ctx: BuildContext, path: PathType, name: str) -> tuple[int, ...] | None:
    """``name``'s shape from the path's first checkpoint (a lazy one answers from its header)."""
    refs = path.refs()
    return shape_of(ctx.load(refs[0]), name) if refs else None


def _by_spans(path: PathType, sub: BuildContext, name: str, shape: tuple[int, ...]) -> Built:
    """One tensor of an elementwise path built a flat span at a time into held tensors."""
    out: Built | None = None
    for start, stop in spans(_numel(shape)):

        def load(ref: str, start: int = start, stop: int = stop) -> Mapping[str, torch.Tensor]:
            return {name: read_span(sub.load(ref), name, start, stop)}

        piece = path.build(replace(sub, load=load))
        if out is None:
            out = replace(
                piece,
                origin=[sub.held_like(shape)],
                directions=[[sub.held_like(shape)] for _ in piece.directions],
            )
        for dst, src in zip(
            [out.origin, *out.directions], [piece.origin, *piece.directions], strict=True
        ):
            put(dst[0], start, stop, src[0], sub, name)
        del piece
    assert out is not None
    return out


def put(
    dst: torch.Tensor, start: int, stop: int, x: torch.Tensor, ctx: BuildContext, name: str
) -> None:
    """Write the fp32 span ``x`` into elements ``[start, stop)`` of the held tensor ``dst``, rounded
    once (float16's range checked as :func:`keep` checks it)."""
    dst.view(-1)[start:stop].copy_(keep(x, dst.dtype, x.device, name=name))


def _cast(built: Built, ctx: BuildContext) -> Built:
    """``built``'s tensors kept (:meth:`BuildContext.keep`) in place, one at a time, so each
    fp32 tensor is freed as its held copy is made; a list that is both the origin and a
    direction (SLERP) is kept once."""
    seen: set[int] = set()
    for lst in (built.origin, *built.directions):
        if id(lst) in seen:
            continue
        seen.add(id(lst))
        for i, x in enumerate(lst):
            lst[i] = ctx.keep(x, ctx.names[i])
    return built


def basis_bytes(numel: int, hold: torch.dtype, ndirections: int) -> int:
    """Bytes of an origin and ``ndirections`` directions of ``numel`` elements held in ``hold``."""
    return numel * (1 + ndirections) * torch.empty((), dtype=hold).element_size()


__all__ = [
    "ENV_HOLD",
    "FP16_SUBNORMAL_ABS",
    "UNIT_ROUNDOFF",
    "basis_bytes",
    "build_basis",
    "held_dtype",
    "hold_from_env",
    "keep",
    "on_host",
]
