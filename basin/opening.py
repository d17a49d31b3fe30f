"""Opening a model for a job: one sequence shared by runs, fits and the jobs to come.

:func:`open_model` does, in this order: resolve the checkpoint references → read the
first one's config → read and validate the dataset → (the caller's ``after_data`` hook)
→ the tokenizer → the model (from the config only) → the key mapping (transformers'
loading rules: every file's names become the model's own) → the compatibility check
(:func:`compatibility`, headers only, under the model's names) → load the first
checkpoint into the model → parameter groups → the movable tensors and the scope.
:class:`basin.engine.Landscape` (a run) and :func:`basin.fit.fit` (a curve fit) both call
it, and a new kind of job (tuning, a study, a subspace fit) starts from it too.

:func:`check_compatible` is the one compatibility check: the engine, ``fit`` and the
API's ``POST /api/runs`` all call it, so a pair that differs only by a base-model prefix
or by a tied alias stored twice (``lm_head.weight`` beside ``transformer.wte.weight`` in
a ``.bin``) is accepted or refused the same way everywhere, with one message
(:func:`basin.checkpoints.mismatch_message`).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from basin.adapters import AdapterSpace, adapter_sources, moved_names
from basin.checkpoints import (
    CheckpointCache,
    LazyStateDict,
    compare_meta,
    load_state_dict,
    mismatch_message,
    read_config,
    tensor_dtype,
    tensor_meta,
)
from basin.data import Dataset, load_dataset
from basin.errors import IncompatibleCheckpoints, InvalidSpec
from basin.evaluate import EVALUATORS, load_tokenizer
from basin.evaluate.base import Evaluator
from basin.groups import ModelGroups, model_groups
from basin.resolve import CheckpointSource, Resolver
from basin.space import key_mapper, live_tensors, load_weights, make_model, rename, select_scope
from basin.tasks import task_entry

logger = logging.getLogger(__name__)

_FLOAT = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(name: str) -> torch.device:
    """``auto`` → ``cuda`` when available, else ``cpu``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InvalidSpec(f"device {name!r} requested but CUDA is not available")
    return torch.device(name)


def precision(dtype: str, device: torch.device) -> tuple[torch.dtype, torch.dtype | None, str]:
    """``(parameter dtype, autocast dtype or None, label)``: bf16 autocast on CUDA for ``auto``."""
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.float32, torch.bfloat16, "fp32+bf16-autocast"
        return torch.float32, None, "float32"
    return _DTYPES[dtype], None, dtype


# ---- the one compatibility check -----------------------------------------------------------


def compatibility(
    task: str, sources: Sequence[tuple[str, CheckpointSource]], model: nn.Module | None = None
) -> list[tuple[str, str]]:
    """Mismatches of every checkpoint against the first, ``[(tensor, reason)]``, compared
    under the model's own names (headers only; no tensor is read from a safetensors file).

    ``sources`` are ``(label, source)``: the label names a checkpoint in the reasons.
    ``model`` is the job's model when it has one; else a skeleton is built from the first
    checkpoint's config on the ``meta`` device (no memory for weights), so the API can run
    the same check before any worker does.
    """
    if len(sources) < 2:
        return []
    to_model = (
        key_mapper(model) if model is not None else _skeleton_mapper(task, sources[0][1].config_dir)
    )
    metas = []
    for label, src in sources:
        raw = tensor_meta(src)
        metas.append((label, rename(raw, to_model(raw))))
    return compare_meta(metas)


def _skeleton_mapper(task: str, config_dir: Path) -> Callable[[Iterable[str]], dict[str, str]]:
    """:func:`key_mapper` of a ``meta``-device skeleton of ``config_dir``'s model, kept for the
    config file as it is now (a 7B skeleton takes seconds to build; the API asks per request)."""
    cfg = Path(config_dir) / "config.json"
    try:
        stamp = cfg.stat().st_mtime_ns
    except OSError:
        stamp = 0  # make_model names the missing config
    return _cached_mapper(task, str(Path(config_dir).resolve()), stamp)


@functools.lru_cache(maxsize=16)
def _cached_mapper(
    task: str, config_dir: str, _stamp: int
) -> Callable[[Iterable[str]], dict[str, str]]:
    return key_mapper(make_model(task, Path(config_dir), meta=True))


def check_compatible(
    task: str,
    sources: Sequence[tuple[str, CheckpointSource]],
    *,
    model: nn.Module | None = None,
    hold: bool = False,
    can_hold: bool = True,
) -> list[tuple[str, str]]:
    """:func:`compatibility`, raising :class:`IncompatibleCheckpoints` on a mismatch unless
    ``hold`` (the job keeps mismatched tensors at the first checkpoint); returns the
    mismatches. ``can_hold`` says whether the message offers ``on_mismatch: hold``."""
    from basin.precheck import check_architectures

    check_architectures(sources)  # BERT vs Llama: said plainly, no tensor list, no hold
    mismatches = compatibility(task, sources, model)
    if mismatches and not hold:
        labels = [label for label, _ in sources]
        # holding is a remedy for a few tensors (a resized head), not for most of the model
        few = len(mismatches) <= max(1, len(tensor_meta(sources[0][1])) // 2)
        raise IncompatibleCheckpoints(
            mismatch_message(mismatches, labels, hold=can_hold and few), mismatches
        )
    return mismatches


# ---- opening -------------------------------------------------------------------------------


@dataclass(eq=False)
class OpenModel:
    """What :func:`open_model` opened: sources, data, tokenizer, the live model (holding the
    first checkpoint, on the job's device and dtype), its groups and the scoped names.

    :meth:`load` gives any checkpoint's state dict under the model's names (loaded once);
    :meth:`evaluator` builds the task's evaluator on the data; :meth:`release` drops the
    loaded state dicts.
    """

    task: str
    refs: list[str]
    sources: dict[str, CheckpointSource]
    config: dict[str, Any]
    data: Dataset
    tokenizer: Any
    tokenizer_id: str | None
    model: nn.Module
    to_model: Callable[[Iterable[str]], dict[str, str]]
    adapter_space: AdapterSpace | None
    mismatches: list[tuple[str, str]]
    device: torch.device
    dtype: torch.dtype
    autocast: torch.dtype | None
    precision: str
    groups: ModelGroups
    #: every tensor that can move (canonical names, in the model's order; held ones excluded)
    movable: list[str]
    #: the tensors the job's scope moves (a subset of ``movable``)
    names: list[str]
    cache: CheckpointCache | None = None
    lazy: bool = True
    _loaded: dict[str, Mapping[str, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def first(self) -> CheckpointSource:
        return self.sources[self.refs[0]]

    def load(self, ref: str) -> Mapping[str, torch.Tensor]:
        """The state dict of ``ref`` under the model's names (an adapter space: the adapter's
        own tensors), loaded once. With a checkpoint cache (a worker keeps checkpoints resident
        between jobs) it is whole in memory when the cache holds it or it fits the cache's byte
        bound (:meth:`basin.checkpoints.CheckpointCache.lookup`); otherwise, and without a
        cache when ``lazy``, read tensor by tensor."""
        if ref not in self._loaded:
            src = self.sources[ref]
            if self.adapter_space is not None:
                self._loaded[ref] = self.adapter_space.load(src)
                return self._loaded[ref]
            sd: Mapping[str, torch.Tensor]
            if self.cache is not None:  # resident, or read lazily when it does not fit the cache's bound
                sd = self.cache.lookup(src, protect=[self.sources[r].id for r in self._loaded])
            elif (
                src.adapter is not None or not self.lazy
            ):  # an adapter merged by peft is built whole
                sd = load_state_dict(src)
            else:
                sd = LazyStateDict(src)
            self._loaded[ref] = rename(sd, self.to_model(sd))
        return self._loaded[ref]

    def base_state(self, src: CheckpointSource) -> dict[str, torch.Tensor]:
        """A full checkpoint (an adapter's base) whole, from the cache when there is one."""
        return self.cache.get(src) if self.cache is not None else load_state_dict(src)

    def evaluator(
        self, data: Dataset | None = None, *, batch_size: int, max_length: int
    ) -> Evaluator:
        """The task's evaluator over ``data`` (default: the opened dataset) with the live model."""
        return EVALUATORS[self.task](
            self.tokenizer,
            self.data if data is None else data,
            self.model,
            batch_size=batch_size,
            max_length=max_length,
            device=self.device,
            autocast_dtype=self.autocast,
        )

    def release(self) -> None:
        """Forget the loaded state dicts (the live model keeps its own tensors)."""
        self._loaded.clear()


def open_model(
    task: str,
    refs: Sequence[str],
    resolver: Resolver,
    *,
    dataset: str,
    max_examples: int,
    seed: int,
    scope: str = "all",
    device: str = "auto",
    dtype: str = "auto",
    tokenizer: str | None = None,
    on_mismatch: str = "error",
    can_hold: bool = True,
    space: str = "merged",
    cache: CheckpointCache | None = None,
    lazy: bool = True,
    parameters_only: bool = False,
    only_moved: bool = True,
    prompts_from_text: bool = False,
    after_data: Callable[[], None] | None = None,
) -> OpenModel:
    """Open ``refs`` (the first builds the model) for ``task`` on ``dataset``; see the module
    docstring for the order. Raises :class:`basin.errors.BasinError` subclasses on bad input,
    before any weights are read where the headers tell.

    ``on_mismatch``: ``error`` refuses mismatched checkpoints (:func:`check_compatible`),
    ``hold`` keeps the mismatched tensors at the first checkpoint (never movable);
    ``can_hold`` says whether the message offers that. ``space: adapter`` opens the
    adapters' own tensors (:class:`basin.adapters.AdapterSpace`). ``parameters_only``
    leaves buffers out of the movable tensors (a fit trains parameters). ``only_moved``:
    adapters on one base, merged, move only what some adapter changes. ``lazy``: without a
    cache, full checkpoints are read tensor by tensor as they are used. ``after_data()``
    runs once the dataset is read, before the tokenizer and the model (a caller's own
    checks of its spec that need no weights).
    """
    entry = task_entry(task)
    refs = list(refs)
    sources = {r: resolver.checkpoint(r) for r in refs}
    first = sources[refs[0]]
    tok_src = resolver.checkpoint(tokenizer) if tokenizer else None

    config = read_config(first.config_dir)
    data = load_dataset(
        resolver.dataset(dataset),
        task,
        max_examples=max_examples,
        seed=seed,
        prompts_from_text=prompts_from_text,
        **entry.dataset_options(config),
    )
    if after_data is not None:
        after_data()
    tok_dirs: list[Path] = [tok_src.config_dir, tok_src.weights] if tok_src else []
    for s in sources.values():
        tok_dirs += [s.config_dir, s.weights]
    tok = load_tokenizer([d for d in tok_dirs if d.is_dir()])

    # the model first (config only): its module tree names the groups, and its own
    # loading rules rename every file's keys (embed_out → lm_head, tied aliases → one name)
    model = make_model(task, first.config_dir)
    to_model = key_mapper(model)
    adapter_space = None
    mismatches: list[tuple[str, str]] = []
    if space == "adapter":  # the live model gets the adapter's layers (basin.adapters)
        if first.adapter is None:
            raise InvalidSpec(
                f"space: adapter needs PEFT adapter checkpoints; {refs[0]!r} is a full "
                "checkpoint (use space: merged to mix full checkpoints and adapters)"
            )
        base = first.base_source()
        adapter_space = AdapterSpace(
            model, first, cache.get(base) if cache is not None else load_state_dict(base), task
        )
        model = adapter_space.model
    else:
        mismatches = check_compatible(
            task,
            [(r, sources[r]) for r in refs],
            model=model,
            hold=on_mismatch == "hold",
            can_hold=can_hold,
        )
    held = {k for k, _ in mismatches}

    dev = resolve_device(device)
    param_dtype, autocast, prec = precision(dtype, dev)
    opened = OpenModel(
        task=task,
        refs=refs,
        sources=sources,
        config=config,
        data=data,
        tokenizer=tok,
        tokenizer_id=tok_src.id if tok_src else None,
        model=model,
        to_model=to_model,
        adapter_space=adapter_space,
        mismatches=mismatches,
        device=dev,
        dtype=param_dtype,
        autocast=autocast,
        precision=prec,
        groups=ModelGroups({}, {}),
        movable=[],
        names=[],
        cache=cache,
        lazy=lazy,
    )
    sd0 = opened.load(refs[0])
    if adapter_space is None:
        load_weights(model, sd0, task)
    opened.groups = model_groups(model)
    model.to(device=dev, dtype=param_dtype)
    live = live_tensors(model)
    # canonical names (one per underlying tensor), in the model's order
    canonical = [k for k, _ in model.named_parameters()]
    if not parameters_only:
        canonical += [k for k, _ in model.named_buffers()]
    movable = [
        k
        for k in canonical
        if k in sd0
        and k not in held
        and tensor_dtype(sd0, k) in _FLOAT
        and live[k].is_floating_point()
    ]
    if only_moved and adapter_space is None and scope == "all" and adapter_sources(sources):
        # adapters on one base, merged: only what some adapter changes moves (the rest is the base)
        base_sd = opened.base_state(first.base_source())
        moved = moved_names(rename(base_sd, to_model(base_sd)), [opened.load(r) for r in refs])
        movable = [k for k in movable if k in moved] or movable
    opened.movable = movable
    try:
        opened.names = select_scope(
            scope, movable, opened.groups
        )  # InvalidSpec when it matches nothing
    except InvalidSpec as e:
        from basin.precheck import explain_scope

        why = explain_scope(scope, model, refs[0])
        if not why:
            raise
        raise InvalidSpec(f"{e}{why}") from None
    return opened


__all__ = [
    "OpenModel",
    "check_compatible",
    "compatibility",
    "open_model",
    "precision",
    "resolve_device",
]
