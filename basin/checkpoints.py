"""Reading checkpoints safely, cheaply inspecting them, and checking they fit together.

Formats (``CheckpointSource.weights``):

- a model directory with ``model.safetensors``;
- a model directory with sharded safetensors (``model.safetensors.index.json``);
- a model directory with ``pytorch_model.bin``, read ONLY with
  ``torch.load(..., weights_only=True)`` — a pickle that carries code is refused
  with :class:`CheckpointError` before anything runs;
- a bare ``.safetensors`` state dict (its config lives in ``config_dir``).

Nothing else is ever unpickled. The bytes of each format (safetensors headers and their
dtype codes, ``weights_only`` loading, ``config.json``) are read by :mod:`basin.formats`.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from basin.errors import CheckpointError
from basin.formats import (
    FLOAT_NAMES,
    TensorMeta,
    bin_meta,
    load_bin,
    safetensors_meta,
    safetensors_spans,
    weight_files_at,
)
from basin.formats import label_info as label_info  # re-exported: it lived here
from basin.formats import read_config as read_config  # re-exported: callers read configs from here
from basin.formats import read_safetensors_header as read_safetensors_header
from basin.source import CheckpointSource

logger = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
    "tokenizer.model", "sentencepiece.bpe.model",
)


def _source(src: CheckpointSource | str | Path) -> CheckpointSource:
    return src if isinstance(src, CheckpointSource) else CheckpointSource.from_path(src)


def weight_files(src: CheckpointSource | str | Path) -> tuple[str, list[Path]]:
    """``(format, files)`` for a source: format is ``safetensors``, ``sharded`` or ``bin``."""
    s = _source(src)
    return weight_files_at(s.weights, s.id)


def load_state_dict(src: CheckpointSource | str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint on the CPU, in their stored dtype (name → tensor).

    An adapter source (``src.adapter``) gives its merged weights θ_base + ΔW in fp32
    (:func:`basin.adapters.merged_state_dict`).
    """
    s = _source(src)
    if s.adapter is not None:
        from basin.adapters import merged_state_dict

        return merged_state_dict(s, load_state_dict(s.base_source()))
    fmt, files = weight_files(s)
    out: dict[str, torch.Tensor] = {}
    for f in files:
        if fmt == "bin":
            out.update(load_bin(f))
            continue
        try:
            out.update(load_file(str(f), device="cpu"))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"checkpoint {s.id}: cannot read {f.name}: {e}") from None
    if not out:
        raise CheckpointError(f"checkpoint {s.id} holds no tensors")
    logger.debug("loaded %d tensors from %s", len(out), s.id)
    return out


def tensor_meta(src: CheckpointSource | str | Path) -> TensorMeta:
    """Shapes and dtypes of every tensor; reads only safetensors headers (``.bin``: mmap load).

    An adapter source has its base's tensors (merging keeps every name and shape).
    """
    s = _source(src)
    if s.adapter is not None:
        return tensor_meta(s.base_source())
    fmt, files = weight_files(s)
    meta: TensorMeta = {}
    for f in files:
        meta.update(bin_meta(f) if fmt == "bin" else safetensors_meta(f))
    return meta


def has_tokenizer(directory: Path) -> bool:
    """Whether a directory holds tokenizer files."""
    d = Path(directory)
    return d.is_dir() and any((d / f).is_file() for f in TOKENIZER_FILES)


@dataclass
class CheckpointInfo:
    """What a manifest records about a checkpoint (cheap: headers and config only)."""

    architecture: str | None
    model_type: str
    num_parameters: int
    dtype: str
    has_tokenizer: bool
    num_labels: int | None
    format: str
    num_tensors: int
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def inspect_checkpoint(
    path: CheckpointSource | str | Path, config_dir: str | Path | None = None
) -> CheckpointInfo:
    """Describe a checkpoint without loading its weights.

    ``num_parameters`` counts the elements of every floating tensor stored, each
    tensor once (safetensors store tied weights once; a ``.bin`` that stores both
    aliases of a tied tensor shares their storage, counted once); ``dtype`` is the
    most common floating dtype; ``num_labels`` is set for sequence-classification
    architectures.
    """
    s = path if isinstance(path, CheckpointSource) else CheckpointSource.from_path(path, config_dir)
    cfg = read_config(s.config_dir)
    fmt, files = weight_files(s)
    meta = tensor_meta(s)
    floats = {k: v for k, v in meta.items() if v[1] in FLOAT_NAMES}
    if fmt == "bin":  # aliases of one tensor share storage, offset and shape
        seen: set[tuple[int, int, tuple[int, ...]]] = set()
        for f in files:
            for k, t in load_bin(f, mmap=True).items():
                ident = (t.untyped_storage().data_ptr(), int(t.storage_offset()), tuple(t.shape))
                if ident in seen:
                    floats.pop(k, None)
                seen.add(ident)
    counts: Counter[str] = Counter()
    nparams = 0
    for shape, dt in floats.values():
        n = 1
        for d in shape:
            n *= d
        nparams += n
        counts[dt] += n
    archs = cfg.get("architectures") or []
    arch = archs[0] if archs else None
    num_labels = None
    if arch and "SequenceClassification" in arch:
        num_labels = label_info(cfg)[0]
    return CheckpointInfo(
        architecture=arch,
        model_type=str(cfg["model_type"]),
        num_parameters=nparams,
        dtype=counts.most_common(1)[0][0] if counts else "unknown",
        has_tokenizer=has_tokenizer(s.config_dir) or (s.weights.is_dir() and has_tokenizer(s.weights)),
        num_labels=num_labels,
        format=fmt,
        num_tensors=len(meta),
        config=cfg,
    )


def compare_meta(metas: Sequence[tuple[str, TensorMeta]]) -> list[tuple[str, str]]:
    """Mismatches of every checkpoint against the first: ``[(tensor_name, reason)]``."""
    if not metas:
        return []
    first_id, first = metas[0]
    out: list[tuple[str, str]] = []
    for other_id, other in metas[1:]:
        for k, (shape, dt) in first.items():
            if k not in other:
                out.append((k, f"missing in {other_id}"))
            elif other[k][0] != shape:
                out.append((k, f"shape {list(shape)} in {first_id} vs {list(other[k][0])} in {other_id}"))
            elif other[k][1] != dt:
                out.append((k, f"dtype {dt} in {first_id} vs {other[k][1]} in {other_id}"))
        for k in other:
            if k not in first:
                out.append((k, f"missing in {first_id} (present in {other_id})"))
    return out


def check_compatible(sources: Sequence[CheckpointSource | str | Path]) -> list[tuple[str, str]]:
    """Compare key sets, shapes and dtypes of every source with the first (headers only),
    under the names the files store.

    Returns all mismatches as ``(tensor_name, reason)``; empty when compatible. Runs, fits
    and the API check under the *model's* names instead (a missing base-model prefix or a
    tied alias stored twice is no mismatch there): :func:`basin.opening.check_compatible`.
    """
    srcs = [_source(s) for s in sources]
    return compare_meta([(s.id, tensor_meta(s)) for s in srcs])


def mismatch_message(mismatches: Sequence[tuple[str, str]], labels: Sequence[str] = (), show: int = 5, *,
                     hold: bool = True) -> str:
    """The one message for incompatible checkpoints (the engine, ``fit`` and the API):
    ``checkpoints 'a' and 'b' are incompatible: N mismatched tensor(s): name: reason; ...``.

    ``labels`` name the checkpoints as the user wrote them; ``hold`` adds the hint that
    ``on_mismatch: hold`` keeps the mismatched tensors at the first checkpoint.
    """
    quoted = [f"'{x}'" for x in dict.fromkeys(labels)]
    who = " and ".join(quoted) if len(quoted) <= 2 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
    head = "; ".join(f"{k}: {why}" for k, why in mismatches[:show])
    more = f" (and {len(mismatches) - show} more)" if len(mismatches) > show else ""
    hint = " Set on_mismatch: hold to keep them at the first checkpoint." if hold else ""
    return (f"checkpoints {who + ' ' if who else ''}are incompatible: {len(mismatches)} mismatched tensor(s): "
            f"{head}{more}.{hint}")


def state_bytes(sd: Mapping[str, torch.Tensor]) -> int:
    """Bytes a state dict holds in memory (a storage shared by tied names counted once)."""
    seen: set[int] = set()
    total = 0
    for t in sd.values():
        st = t.untyped_storage()
        key = st.data_ptr()
        if key not in seen:
            seen.add(key)
            total += st.nbytes()
    return total


def checkpoint_bytes(src: CheckpointSource | str | Path) -> int:
    """Bytes :func:`load_state_dict` will hold for ``src``, from headers only (an adapter: its
    base's tensors merged, fp32)."""
    s = _source(src)
    meta = tensor_meta(s)
    size = {d: 4 if s.adapter is not None else torch.empty((), dtype=getattr(torch, d)).element_size()
            for _, d in meta.values()}
    return sum(size[d] * _numel(shape) for shape, d in meta.values())


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for x in shape:
        n *= int(x)
    return n


class CheckpointCache:
    """LRU of loaded state dicts (CPU), keyed by :attr:`CheckpointSource.id`, bounded by bytes.

    A long-lived worker keeps its most recently used checkpoints resident across runs, at
    most ``max_bytes`` of them (``None``: no byte bound) and at most ``max_items`` (``None``:
    no count bound). Thread-safe. Callers must not modify returned tensors.

    :meth:`get` always returns the whole state dict (kept when it fits). :meth:`lookup` is
    what a run opens checkpoints with: a hit is the resident state dict; a miss is loaded
    whole and kept only when it fits beside the entries the run already holds (``protect``)
    — evicting the least recently used others — and otherwise read lazily, tensor by tensor
    (:class:`LazyStateDict`, as the CLI reads), so the cache never makes a run hold more than
    its bound beyond what the run itself needs.
    """

    def __init__(self, max_items: int | None = None, *, max_bytes: int | None = None):
        self.max_items = None if max_items is None else max(1, int(max_items))
        self.max_bytes = None if max_bytes is None else max(0, int(max_bytes))
        self._items: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    @property
    def nbytes(self) -> int:
        """Bytes of the state dicts held now."""
        with self._lock:
            return sum(self._sizes.values())

    def keys(self) -> list[str]:
        """Ids held, least recently used first."""
        with self._lock:
            return list(self._items)

    def _hit(self, ident: str) -> dict[str, torch.Tensor] | None:
        with self._lock:
            sd = self._items.get(ident)
            if sd is not None:
                self._items.move_to_end(ident)
                self.hits += 1
            return sd

    def _room(self, need: int, protect: frozenset[str]) -> bool:
        """Evict unprotected entries, least recently used first, until ``need`` more bytes (and
        one more item) fit; ``False`` (nothing evicted) when they cannot (lock held)."""
        if self.max_bytes is not None and need > self.max_bytes:
            return False
        free_b = [k for k in self._items if k not in protect]
        held_b = sum(self._sizes.values())
        spare = sum(self._sizes[k] for k in free_b)
        if self.max_bytes is not None and held_b - spare + need > self.max_bytes:
            return False
        if self.max_items is not None and len(self._items) - len(free_b) + 1 > self.max_items:
            return False
        for k in free_b:
            over_b = self.max_bytes is not None and held_b + need > self.max_bytes
            over_n = self.max_items is not None and len(self._items) + 1 > self.max_items
            if not (over_b or over_n):
                break
            del self._items[k]
            held_b -= self._sizes.pop(k)
            self.evictions += 1
        return True

    def _keep(self, ident: str, sd: dict[str, torch.Tensor], protect: frozenset[str] = frozenset()) -> None:
        size = state_bytes(sd)
        with self._lock:
            if ident in self._items or not self._room(size, protect):
                return
            self._items[ident] = sd
            self._sizes[ident] = size

    def get(self, src: CheckpointSource) -> dict[str, torch.Tensor]:
        """The whole state dict of ``src``, loaded on a miss (and kept when it fits)."""
        sd = self._hit(src.id)
        if sd is not None:
            return sd
        sd = load_state_dict(src)
        with self._lock:
            self.misses += 1
        self._keep(src.id, sd)
        return sd

    def lookup(self, src: CheckpointSource, protect: Sequence[str] = ()) -> Mapping[str, torch.Tensor]:
        """``src`` for a run that already holds the entries ``protect`` (ids): resident on a hit;
        on a miss whole and kept when it fits (:meth:`get`), else a :class:`LazyStateDict`."""
        sd = self._hit(src.id)
        if sd is not None:
            return sd
        with self._lock:
            self.misses += 1
            fits = self._room(checkpoint_bytes(src), frozenset(protect))
        if not fits:
            return load_state_dict(src) if src.adapter is not None else LazyStateDict(src)
        whole = load_state_dict(src)
        self._keep(src.id, whole, frozenset(protect))
        return whole

    def __contains__(self, key: object) -> bool:
        ident = key.id if isinstance(key, CheckpointSource) else key
        with self._lock:
            return ident in self._items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._sizes.clear()


# ---- lazy reading: one tensor at a time ----------------------------------------------------

class LazyStateDict(Mapping[str, torch.Tensor]):
    """A checkpoint's tensors read from disk one at a time, on access (a read-only mapping).

    Safetensors files are read at each tensor's offsets with ``readinto`` into a tensor of
    its own (not memory-mapped: mapped pages would count in the process's resident memory
    until unmapped); every access reads a *fresh* tensor the caller owns (:attr:`fresh`),
    so nothing holds the whole checkpoint. ``.bin`` files are ``torch.load(mmap=True,
    weights_only=True)``-ed (tensors backed by the file; the access copies them).
    :meth:`meta` answers shape and dtype from the header without reading weights.
    """

    fresh = True  # each ``[]`` returns a new tensor: callers may overwrite it

    def __init__(self, src: CheckpointSource | str | Path):
        s = _source(src)
        self.id = s.id
        fmt, files = weight_files(s)
        self._where: dict[str, tuple[Path, int, int, tuple[int, ...], torch.dtype]] = {}
        self._bin: dict[str, torch.Tensor] = {}
        for f in files:
            if fmt == "bin":
                self._bin.update(load_bin(f, mmap=True))
                continue
            for k, t in safetensors_spans(f).items():
                self._where[k] = (f, t.offset, t.nbytes, t.shape, getattr(torch, t.dtype))
        self._names: dict[str, str] = {k: k for k in [*self._where, *self._bin]}
        if not self._names:
            raise CheckpointError(f"checkpoint {s.id} holds no tensors")
        self.reads = 0  # tensors read so far (a probe for tests)

    def renamed(self, names: Mapping[str, str]) -> LazyStateDict:
        """The same tensors under new names (``names``: stored → new; unknown keys keep
        theirs; of two stored keys with one new name the first is kept); nothing is read."""
        out = object.__new__(LazyStateDict)
        out.__dict__.update(self.__dict__)
        out._names = {}
        for new, stored in ((names.get(k, k), s) for k, s in self._names.items()):
            out._names.setdefault(new, stored)
        out.reads = 0
        return out

    def span(self, name: str, start: int, stop: int) -> torch.Tensor:
        """Elements ``[start, stop)`` of ``name`` flattened, reading only them (a fresh 1-D tensor)."""
        stored = self._names[name]
        self.reads += 1
        if stored in self._bin:
            return self._bin[stored].reshape(-1)[start:stop].clone()
        path, offset, nbytes, shape, dtype = self._where[stored]
        size = torch.empty((), dtype=dtype).element_size()
        start, stop = max(0, start), min(stop, nbytes // size)
        buf = torch.empty(max(0, stop - start) * size, dtype=torch.uint8)
        try:
            with open(path, "rb") as fh:
                fh.seek(offset + start * size)
                got = fh.readinto(buf.numpy().data)
        except OSError as e:
            raise CheckpointError(f"checkpoint {self.id}: cannot read {name} from {path.name}: {e}") from None
        if got != buf.numel():
            raise CheckpointError(f"checkpoint {self.id}: {path.name} is truncated at tensor {name}")
        return buf.view(dtype)

    def meta(self, name: str) -> tuple[tuple[int, ...], torch.dtype]:
        """``(shape, dtype)`` of ``name`` without reading it."""
        stored = self._names[name]
        if stored in self._bin:
            t = self._bin[stored]
            return tuple(t.shape), t.dtype
        _, _, _, shape, dtype = self._where[stored]
        return shape, dtype

    def __getitem__(self, name: str) -> torch.Tensor:
        stored = self._names[name]
        self.reads += 1
        if stored in self._bin:
            return self._bin[stored].clone()
        path, offset, nbytes, shape, dtype = self._where[stored]
        buf = torch.empty(nbytes, dtype=torch.uint8)
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                got = fh.readinto(buf.numpy().data)
        except OSError as e:
            raise CheckpointError(f"checkpoint {self.id}: cannot read {name} from {path.name}: {e}") from None
        if got != nbytes:
            raise CheckpointError(f"checkpoint {self.id}: {path.name} is truncated at tensor {name}")
        return buf.view(dtype).reshape(shape)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._names


def tensor_dtype(sd: Mapping[str, torch.Tensor], name: str) -> torch.dtype:
    """``sd[name].dtype``, without reading the tensor of a :class:`LazyStateDict`."""
    return sd.meta(name)[1] if isinstance(sd, LazyStateDict) else sd[name].dtype


def tensor_shape(sd: Mapping[str, torch.Tensor], name: str) -> tuple[int, ...]:
    """``tuple(sd[name].shape)``, without reading the tensor of a :class:`LazyStateDict`."""
    return sd.meta(name)[0] if isinstance(sd, LazyStateDict) else tuple(sd[name].shape)
