"""Frozen-prefix reuse: compute what the frozen lower part of the model outputs once per batch.

When a run's scope keeps the embeddings and the lower blocks at θA (``upper``, ``middle``,
``head``, ``rest``, ``<stack>.upper``, a regex over upper blocks…), everything a forward
pass computes before the first moving block is the same at every point. :class:`PrefixReuse`
keeps it: per batch, the output of one **cut** module is recorded during the first full
pass, and at later points that module (and the frozen blocks before it) return the
recorded output instead of running, so only the moving part runs per point.

The cuts are found from the moved tensors (by identity, tied aliases included) and the
module tree (:func:`basin.groups.stack_modules`), stack by stack in model order:

- a stack whose block ``k > 0`` is the first that moves: cut at block ``k − 1``; blocks
  ``0 … k − 2`` return the same recorded output without running (the stack's own loop
  still runs and builds masks, positions and rotary embeddings exactly as in a full pass;
  what a stack passes from block to block besides the hidden states — T5's position
  bias — is in the recorded output);
- a stack none of whose blocks move: cut at the highest module above it (below the task
  model) that holds no moved tensor — a frozen T5/BART **encoder** (then the next stack, the
  decoder, is examined too), a whole base model for scope ``head`` of a decoder classifier
  or untied LM, BERT's ``encoder`` for its ``head`` (pooler + classifier); when even the
  stack's parent moves (a final norm), cut at the stack's last block.

Nothing is reused when an embedding tensor moves or the first block of the first stack
moves. Two checks run on the first batch: no module that holds a moved tensor may run
before a cut has returned (else the recorded output would depend on the point), and the
forward pass with the cut replayed must equal the full pass just computed (same weights);
either failing switches reuse off for the run, with the reason in :meth:`PrefixReuse.info`.

The recorded outputs are bounded by ``cap_bytes``: a batch whose outputs no longer fit is
evaluated with the full pass at every point (``info()["full_batches"]``). Replayed outputs
are cloned, so a moving block that writes its input in place cannot corrupt the record.
Outside :meth:`PrefixReuse.active` (ensembling, generation, anything else calling the
model) every module runs normally.

Switches: ``BASIN_PREFIX_REUSE=0`` turns reuse off; ``BASIN_PREFIX_CACHE_MB`` sets the cap
(default :data:`DEFAULT_CAP_MB`); :meth:`basin.engine.Landscape.open` takes both as
arguments too.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from basin.groups import ModelGroups, stack_modules

logger = logging.getLogger(__name__)

#: Default bound on the recorded outputs, MiB (``BASIN_PREFIX_CACHE_MB``).
DEFAULT_CAP_MB = 1024.0
ENV_SWITCH = "BASIN_PREFIX_REUSE"
ENV_CAP = "BASIN_PREFIX_CACHE_MB"
#: Tolerance of the first batch's self-check (replayed vs full pass at the same weights), relative to
#: the largest output magnitude (at least 1).
CHECK_ATOL = 1e-5


def enabled_by_env() -> bool:
    """``BASIN_PREFIX_REUSE`` unset or anything but ``0``/``false``/``off``/``no``."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "off", "no")


def cap_from_env() -> float:
    """The cap in MiB from ``BASIN_PREFIX_CACHE_MB`` (default :data:`DEFAULT_CAP_MB`)."""
    raw = os.environ.get(ENV_CAP)
    if raw is None or not raw.strip():
        return DEFAULT_CAP_MB
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{ENV_CAP}={raw!r} is not a number of MiB") from None
    if value < 0:
        raise ValueError(f"{ENV_CAP}={raw!r} must be ≥ 0 MiB")
    return value


@dataclass
class Cut:
    """A module whose output is recorded once per batch; ``stubs`` return that output too."""

    path: str
    module: nn.Module
    stubs: list[nn.Module] = field(default_factory=list)


def _tensors(mod: nn.Module, recurse: bool = True) -> Iterator[torch.Tensor]:
    for _, t in mod.named_parameters(recurse=recurse, remove_duplicate=False):
        yield t
    for _, b in mod.named_buffers(recurse=recurse, remove_duplicate=False):
        if b is not None:
            yield b


def _holds(mod: nn.Module, ids: set[int]) -> bool:
    return any(id(t) in ids for t in _tensors(mod))


def _map(obj: Any, fn: Callable[[torch.Tensor], Any], memo: dict[int, Any]) -> Any:
    """``obj`` with every tensor replaced by ``fn(tensor)`` (tuples, lists, dicts, ModelOutputs);
    one call per distinct tensor, so aliases stay aliases."""
    if isinstance(obj, torch.Tensor):
        if id(obj) not in memo:
            memo[id(obj)] = fn(obj)
        return memo[id(obj)]
    if isinstance(obj, dict):  # transformers' ModelOutput is an OrderedDict of its non-None fields
        items = {k: _map(v, fn, memo) for k, v in obj.items()}
        try:
            return type(obj)(**items)
        except TypeError:
            return type(obj)(items)
    if isinstance(obj, tuple):
        vals = [_map(v, fn, memo) for v in obj]
        return type(obj)(*vals) if hasattr(obj, "_fields") else tuple(vals)
    if isinstance(obj, list):
        return [_map(v, fn, memo) for v in obj]
    return obj


def _leaves(obj: Any) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []
    _map(obj, lambda t: out.append(t), {})
    return out


def _storage_bytes(objs: Sequence[Any]) -> int:
    seen: set[int] = set()
    total = 0
    for obj in objs:
        for t in _leaves(obj):
            key = t.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes()
    return total


def _strip_caches(obj: Any) -> Any:
    """Drop non-tensor, non-container leaves that hold state (KV caches): ``None`` in their place."""
    if isinstance(obj, torch.Tensor) or obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, dict):
        items = {k: _strip_caches(v) for k, v in obj.items()}
        items = {k: v for k, v in items.items() if v is not None}
        try:
            return type(obj)(**items)
        except TypeError:
            return type(obj)(items)
    if isinstance(obj, tuple):
        vals = [_strip_caches(v) for v in obj]
        return type(obj)(*vals) if hasattr(obj, "_fields") else tuple(vals)
    if isinstance(obj, list):
        return [_strip_caches(v) for v in obj]
    return None


def moved_tensors(model: nn.Module, names: Sequence[str]) -> list[torch.Tensor]:
    """The model's own parameter / buffer objects behind ``names`` (tied aliases are one object)."""
    own: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    own.update({k: b for k, b in model.named_buffers(remove_duplicate=False) if b is not None})
    return [own[n] for n in names]


def plan_cuts(model: nn.Module, moved: Sequence[torch.Tensor], groups: ModelGroups) -> list[Cut] | str:
    """Where to cut for the moved tensors ``moved`` (:func:`moved_tensors`: the model's own
    objects, compared by identity), or the reason there is no frozen prefix worth reusing."""
    ids = {id(t) for t in moved}
    if not ids:
        return "nothing moves"
    paths_of: dict[int, str] = {}
    for path, mod in model.named_modules(remove_duplicate=False):
        paths_of.setdefault(id(mod), path)
    # a moved embedding tensor changes every block's input
    by_id: dict[int, list[str]] = {}
    for name, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        if t is not None:
            by_id.setdefault(id(t), []).append(name)
    for t in moved:
        for name in by_id.get(id(t), []):
            g = groups.get(name)
            if g is not None and g.kind == "embeddings":
                return f"an embedding tensor moves ({name})"
    stacks = stack_modules(model)
    if not stacks:
        return "the model has no stack of blocks"
    modules = dict(model.named_modules(remove_duplicate=False))
    cuts: list[Cut] = []
    for path, blocks in stacks.items():
        if any(path.startswith(c.path + ".") for c in cuts):
            continue  # inside a module that is already replayed whole
        moving = [i for i, blk in enumerate(blocks) if _holds(blk, ids)]
        if moving:
            k = moving[0]
            if k > 0:
                cuts.append(Cut(f"{path}.{k - 1}", blocks[k - 1], list(blocks[: k - 1])))
            break
        # no block moves: the highest frozen module above the stack (not the task model itself)
        best = None
        parts = path.split(".")
        for n in range(len(parts) - 1, 0, -1):
            anc = ".".join(parts[:n])
            if _holds(modules[anc], ids):
                break
            best = anc
        if best is None:  # the stack's parent moves (a final norm): replay up to the last block
            cuts.append(Cut(f"{path}.{len(blocks) - 1}", blocks[-1], list(blocks[:-1])))
            break
        cuts.append(Cut(best, modules[best]))
    if not cuts:
        first = next(iter(stacks))
        return f"the first block of {first!r} moves"
    # a moved tensor held directly by a module above a cut (the task model's final_logits_bias) is
    # used by code the cut cannot see: allowed only when it is head
    for c in cuts:
        for anc in _ancestors(c.path):
            for name, t in [*modules[anc].named_parameters(recurse=False), *modules[anc].named_buffers(recurse=False)]:
                full = f"{anc}.{name}" if anc else name
                if t is not None and id(t) in ids and (g := groups.get(full)) is not None and g.kind != "head":
                    return f"{full} ({g.kind}) moves and is held above {c.path!r}"
    return cuts


def _ancestors(path: str) -> list[str]:
    parts = path.split(".")
    return ["", *(".".join(parts[:n]) for n in range(1, len(parts)))]


class PrefixReuse:
    """Recorded cut outputs per batch of one evaluator, and the module wrappers that replay them.

    Build with :meth:`plan` (``None`` plus a reason when nothing can be reused). The
    evaluator calls :meth:`active` around a point's forward passes and :meth:`at` before
    each batch; :meth:`close` restores the modules and frees the records.
    """

    def __init__(self, model: nn.Module, cuts: list[Cut], moved: Sequence[torch.Tensor], *, num_batches: int,
                 cap_bytes: int):
        self.model = model
        self.cuts = cuts
        self.num_batches = num_batches
        self.cap_bytes = int(cap_bytes)
        self.cache: dict[int, list[Any]] = {}  # batch → one recorded output per cut
        self.full: set[int] = set()  # batches over the cap: full pass at every point
        self.bytes = 0
        self.disabled: str | None = None
        self._mode: str | None = None  # None (pass through), "capture", "replay"
        self._batch: int | None = None
        self._got: list[list[Any]] = [[] for _ in cuts]
        self._checked = False  # the first capture checked that no moved tensor runs before a cut
        self._verified = False  # the first record was replayed against its full pass
        self._uses: list[str] = []
        self._owner_hooks: list[Any] = []
        self._events: list[tuple[str, int]] = []
        self._restore: list[nn.Module] = []
        self._hooks: list[Any] = []
        ids = {id(t) for t in moved}
        anc = {a for c in cuts for a in _ancestors(c.path)} | {c.path for c in cuts}
        self._owners = [
            (p, m) for p, m in model.named_modules(remove_duplicate=False)
            if p not in anc and any(id(t) in ids for t in _tensors(m, recurse=False))
        ]
        for j, c in enumerate(cuts):
            self._wrap(c.module, self._cut_forward(j, c.module.forward))
            for s in c.stubs:
                self._wrap(s, self._stub_forward(j, s.forward))
        params = inspect.signature(model.forward).parameters
        self._no_cache = "use_cache" in params
        self._hooks.append(model.register_forward_pre_hook(self._pre_root, with_kwargs=True))
        self._hooks.append(model.register_forward_hook(self._post_root, with_kwargs=True))

    # ---- construction ---------------------------------------------------------------------

    @classmethod
    def plan(cls, model: nn.Module, names: Sequence[str], groups: ModelGroups, *, num_batches: int,
             cap_bytes: int) -> tuple[PrefixReuse | None, str | None]:
        """``(PrefixReuse, None)`` when the tensors ``names`` move and leave a frozen prefix, else
        ``(None, reason)``."""
        moved = moved_tensors(model, names)
        cuts = plan_cuts(model, moved, groups)
        if isinstance(cuts, str):
            return None, cuts
        return cls(model, cuts, moved, num_batches=num_batches, cap_bytes=cap_bytes), None

    def _wrap(self, mod: nn.Module, forward: Callable[..., Any]) -> None:
        mod.forward = forward  # an instance attribute; close() deletes it
        self._restore.append(mod)

    # ---- the evaluator's side ---------------------------------------------------------------

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Within: the evaluator's batches, :meth:`at` says which one is next."""
        self._batch = None
        try:
            yield
        finally:
            self._mode = None
            self._batch = None

    def at(self, i: int) -> None:
        """Batch ``i`` is the next the model sees: replay it, record it, or run it in full."""
        self._batch = i
        self._got = [[] for _ in self.cuts]
        self._events = []
        if self.disabled is not None or i in self.full:
            self._mode = "full"
        elif i in self.cache:
            self._mode = "replay"
        else:
            self._mode = "capture"

    def needs_capture(self) -> bool:
        """Whether some batch has neither a record nor a full-pass mark yet (the next point records it)."""
        return self.disabled is None and any(i not in self.cache and i not in self.full
                                             for i in range(self.num_batches))

    # ---- wrappers ---------------------------------------------------------------------------

    def _replayed(self, j: int) -> Any:
        assert self._batch is not None
        return _map(self.cache[self._batch][j], torch.Tensor.clone, {})

    def _cut_forward(self, j: int, orig: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if self._mode == "replay":
                return self._replayed(j)
            out = orig(*args, **kwargs)
            if self._mode == "capture":
                # a copy: a moving block may write its input in place
                self._got[j].append(_map(_strip_caches(out), torch.Tensor.clone, {}))
                self._events.append(("cut", j))
            return out
        return forward

    def _stub_forward(self, j: int, orig: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            if self._mode == "replay":
                assert self._batch is not None
                return self.cache[self._batch][j]  # only frozen stubs and the cut see it
            return orig(*args, **kwargs)
        return forward

    def _owner_pre(self, path: str) -> Callable[..., None]:
        def hook(_mod: nn.Module, _args: Any) -> None:
            self._events.append(("use", len(self._events)))
            self._uses.append(path)
        return hook

    def _pre_root(self, _mod: nn.Module, args: Any, kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]] | None:
        if self._mode is None:
            return None
        if self._mode == "capture" and not self._checked:
            self._uses = []
            self._owner_hooks = [m.register_forward_pre_hook(self._owner_pre(p)) for p, m in self._owners]
        if self._no_cache:  # no KV cache while evaluating: a record holds hidden states only
            return args, {**kwargs, "use_cache": False}
        return None

    def _post_root(self, mod: nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        if self._mode != "capture" or self._batch is None:
            return
        i = self._batch
        first = not self._checked
        if first:
            for h in self._owner_hooks:
                h.remove()
            self._checked = True
        if any(len(g) != 1 for g in self._got):
            return self._disable("a cut module ran " + ", ".join(
                f"{c.path} ×{len(g)}" for c, g in zip(self.cuts, self._got, strict=True)) + " in one forward pass")
        if first:
            # every cut must have returned before any module holding a moved tensor ran
            pos = {}
            for n, (kind, j) in enumerate(self._events):
                if kind == "cut":
                    pos[j] = n
            uses = [n for n, (kind, _) in enumerate(self._events) if kind == "use"]
            if uses and any(u < p for u in uses for p in pos.values()):
                return self._disable(f"{self._uses[0]} holds a moved tensor and runs before a cut")
        record = [g[0] for g in self._got]
        size = _storage_bytes(record)
        if self.bytes + size > self.cap_bytes:
            self.full.add(i)
            logger.info("prefix reuse: batch %d needs %.1f MiB beyond the cap of %.0f MiB: full pass there",
                        i, size / 2**20, self.cap_bytes / 2**20)
            return None
        self.cache[i] = record
        self.bytes += size
        if not self._verified:  # the replayed pass equals the full pass just computed (same weights)
            self._verified = True
            self._mode = "replay"
            try:
                again = mod.forward(*args, **kwargs)
            finally:
                self._mode = "capture"
            a, b = _leaves(_strip_caches(output)), _leaves(_strip_caches(again))
            same = len(a) == len(b) and all(
                x.shape == y.shape
                and bool(((x.float() - y.float()).abs().max() <= CHECK_ATOL * max(1.0, float(x.float().abs().max())))
                         if x.numel() else True)
                for x, y in zip(a, b, strict=True) if x.is_floating_point())
            if not same:
                return self._disable("the replayed forward pass differs from the full pass")
        return None

    def _disable(self, reason: str) -> None:
        logger.warning("prefix reuse off: %s", reason)
        self.disabled = reason
        self.cache.clear()
        self.bytes = 0

    # ---- reporting / teardown ------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """What was reused: ``{on, cuts, batches, cached_batches, full_batches, cache_mb, cap_mb, reason?}``."""
        out: dict[str, Any] = {
            "on": self.disabled is None,
            "cuts": [c.path for c in self.cuts],
            "batches": self.num_batches,
            "cached_batches": len(self.cache),
            "full_batches": len(self.full),
            "cache_mb": round(self.bytes / 2**20, 3),
            "cap_mb": round(self.cap_bytes / 2**20, 3),
        }
        if self.disabled is not None:
            out["reason"] = self.disabled
        elif self.full:
            out["reason"] = (f"{len(self.full)} of {self.num_batches} batches did not fit the cap "
                             f"({ENV_CAP}) and ran the full pass at every point")
        return out

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        for m in self._restore:
            if "forward" in m.__dict__:
                del m.forward
        self._restore = []
        self.cache.clear()
        self.bytes = 0
