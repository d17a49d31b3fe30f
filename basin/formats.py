"""The file formats Basin reads, in one leaf module: safetensors headers and their dtype
codes, ``.bin`` state dicts (``weights_only``), ``config.json``.

The core (:mod:`basin.checkpoints`, :mod:`basin.adapters`) and the store
(:mod:`service.store`) read these files through this module only, so there is one
safetensors header reader and one dtype table. It imports nothing else of ``basin`` but
:mod:`basin.errors` (an import-linter contract in ``pyproject.toml``).

A safetensors file is ``u64 little-endian N``, ``N`` bytes of JSON
``{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__"?: {...}}``, then a data
buffer of ``size - 8 - N`` bytes. :func:`read_safetensors_header` checks that structure
from the header and the file size alone (no weight is read): a known dtype, a shape of
non-negative ints, ``end - begin == prod(shape) * itemsize``, and spans that cover the
buffer exactly (a truncated or padded file is refused) — what the ``safetensors`` library
itself demands before it loads a file.
"""

from __future__ import annotations

import json
import math
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from basin import strict_json
from basin.errors import CheckpointError

if TYPE_CHECKING:
    import torch


class Dtype(NamedTuple):
    """A safetensors dtype code's torch name and bytes per element."""

    name: str
    itemsize: int


#: safetensors dtype code → (torch dtype name, bytes per element): the codes the ``safetensors``
#: library reads into torch tensors (sub-byte float formats are not accepted).
SAFETENSORS_DTYPES: dict[str, Dtype] = {
    "F64": Dtype("float64", 8),
    "F32": Dtype("float32", 4),
    "F16": Dtype("float16", 2),
    "BF16": Dtype("bfloat16", 2),
    "F8_E4M3": Dtype("float8_e4m3fn", 1),
    "F8_E4M3FNUZ": Dtype("float8_e4m3fnuz", 1),
    "F8_E5M2": Dtype("float8_e5m2", 1),
    "F8_E5M2FNUZ": Dtype("float8_e5m2fnuz", 1),
    "F8_E8M0": Dtype("float8_e8m0fnu", 1),
    "I64": Dtype("int64", 8),
    "I32": Dtype("int32", 4),
    "I16": Dtype("int16", 2),
    "I8": Dtype("int8", 1),
    "U64": Dtype("uint64", 8),
    "U32": Dtype("uint32", 4),
    "U16": Dtype("uint16", 2),
    "U8": Dtype("uint8", 1),
    "BOOL": Dtype("bool", 1),
    "C64": Dtype("complex64", 8),
}
#: torch dtype names of the floating-point codes
FLOAT_NAMES = frozenset(
    d.name for d in SAFETENSORS_DTYPES.values() if d.name.startswith(("float", "bfloat"))
)
#: A header longer than this is not believed (the safetensors library's own limit).
MAX_HEADER_BYTES = 100_000_000

#: ``name → (shape, dtype name)``: what the compatibility check compares.
TensorMeta = dict[str, tuple[tuple[int, ...], str]]


@dataclass(frozen=True)
class TensorSpan:
    """Where one tensor of a safetensors file lies: absolute byte offsets in the file."""

    dtype: str  # torch dtype name, e.g. ``float32``
    shape: tuple[int, ...]
    offset: int
    nbytes: int


SAFE_SINGLE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN_SINGLE = "pytorch_model.bin"


def weight_files_at(w: Path, ident: str) -> tuple[str, list[Path]]:
    """``(format, files)`` of a checkpoint's weights ``w`` (a file or a folder; ``ident`` names it in
    errors): format is ``safetensors``, ``sharded`` or ``bin``."""
    if not w.exists():
        raise CheckpointError(f"checkpoint {ident}: {w} does not exist")
    if w.is_file():
        if w.suffix == ".safetensors":
            return "safetensors", [w]
        if w.suffix in (".bin", ".pt", ".pth"):
            return "bin", [w]
        raise CheckpointError(f"checkpoint {ident}: {w.name} is not a .safetensors or .bin file")
    if (w / SAFE_SINGLE).is_file():
        return "safetensors", [w / SAFE_SINGLE]
    if (w / SAFE_INDEX).is_file():
        try:
            index = json.loads((w / SAFE_INDEX).read_text())
            shards = sorted(set(index["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as e:
            raise CheckpointError(f"checkpoint {ident}: unreadable {SAFE_INDEX}: {e}") from None
        files = []
        for name in shards:
            if not isinstance(name, str) or Path(name).name != name:
                raise CheckpointError(f"checkpoint {ident}: bad shard name {name!r} in {SAFE_INDEX}")
            if not (w / name).is_file():
                raise CheckpointError(f"checkpoint {ident}: shard {name} listed in {SAFE_INDEX} is missing")
            files.append(w / name)
        return "sharded", files
    if (w / BIN_SINGLE).is_file():
        return "bin", [w / BIN_SINGLE]
    raise CheckpointError(
        f"checkpoint {ident}: no weights in {w} (expected {SAFE_SINGLE}, {SAFE_INDEX} or {BIN_SINGLE})"
    )


def safetensors_header_length(head: bytes) -> int | None:
    """The header length a file's first bytes announce when they look like safetensors
    (``u64`` length, then ``{``), else ``None``."""
    if len(head) < 9 or head[8:9] != b"{":
        return None
    (n,) = struct.unpack("<Q", head[:8])
    return n if 0 < n <= MAX_HEADER_BYTES else None


def _read_raw(path: Path) -> tuple[dict[str, Any], int, int]:
    """``(header without __metadata__, N, file size)``; CheckpointError when unreadable."""
    name = path.name
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) != 8:
                raise CheckpointError(f"{name} is not a safetensors file: shorter than 8 bytes")
            (n,) = struct.unpack("<Q", raw)
            if n == 0 or n > MAX_HEADER_BYTES or 8 + n > size:
                raise CheckpointError(
                    f"{name} is not a valid safetensors file: header length {n} does not fit "
                    f"a file of {size} bytes (truncated?)"
                )
            header = strict_json.loads(f.read(n).decode("utf-8"))  # bounded nesting
    except OSError as e:
        raise CheckpointError(f"cannot read {name}: {e}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{name} is not a valid safetensors file: bad JSON header: {e}"
        ) from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{name} is not a valid safetensors file: header is not an object")
    header.pop("__metadata__", None)
    return header, n, size


def read_safetensors_header(path: Path) -> dict[str, dict[str, Any]]:
    """A safetensors file's header (tensor name → ``{dtype, shape, data_offsets}``), its
    structure checked without reading any weight (see the module doc). Raises
    :class:`CheckpointError` naming what is wrong."""
    return _checked_header(path)[0]


def _clip(value: Any, limit: int = 120) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error names a tensor, never a header."""
    text = repr(value) if not isinstance(value, list) or len(value) <= 16 else repr(value[:16])[:-1] + ", …]"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _checked_header(path: Path) -> tuple[dict[str, dict[str, Any]], int]:
    """The checked header and where the data buffer starts (``8 + N``)."""
    header, n, size = _read_raw(path)
    name = path.name
    if not header:
        raise CheckpointError(f"{name} holds no tensors")
    buffer = size - 8 - n
    spans = []
    for key, v in header.items():
        try:
            dtype, shape, (begin, end) = v["dtype"], v["shape"], v["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{name}: malformed header entry for tensor {_clip(key)}") from None
        if not isinstance(dtype, str) or dtype not in SAFETENSORS_DTYPES:
            raise CheckpointError(f"{name}: tensor {_clip(key)} has unknown dtype {_clip(dtype)}")
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise CheckpointError(f"{name}: tensor {_clip(key)} has an invalid shape {_clip(shape)}")
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in (begin, end)):
            raise CheckpointError(f"{name}: tensor {_clip(key)} has invalid offsets")
        if not 0 <= begin <= end <= buffer:
            raise CheckpointError(
                f"{name}: tensor {_clip(key)} lies at bytes {begin}..{end} but the data holds only "
                f"{buffer} bytes (the file is truncated)"
            )
        if end - begin != math.prod(shape) * SAFETENSORS_DTYPES[dtype].itemsize:
            raise CheckpointError(f"{name}: tensor {_clip(key)} size does not match its shape {_clip(shape)}")
        spans.append((begin, end))
    spans.sort()
    pos = 0
    for begin, end in spans:
        if begin != pos:
            raise CheckpointError(f"{name}: tensor data overlaps or leaves gaps at byte {pos}")
        pos = end
    if pos != buffer:
        raise CheckpointError(f"{name}: {buffer - pos} bytes after the last tensor (corrupt file)")
    return header, 8 + n


def safetensors_spans(path: Path) -> dict[str, TensorSpan]:
    """Every tensor of a safetensors file: torch dtype name, shape and absolute byte span."""
    header, start = _checked_header(path)
    out = {}
    for k, v in header.items():
        begin, end = v["data_offsets"]
        out[k] = TensorSpan(
            SAFETENSORS_DTYPES[v["dtype"]].name, tuple(v["shape"]), start + begin, end - begin
        )
    return out


def safetensors_meta(path: Path) -> TensorMeta:
    """``name → (shape, torch dtype name)`` from a safetensors header (no weights read)."""
    return {
        k: (tuple(v["shape"]), SAFETENSORS_DTYPES[v["dtype"]].name)
        for k, v in read_safetensors_header(path).items()
    }


def dtype_name(dtype: torch.dtype) -> str:
    """A torch dtype's name as :data:`SAFETENSORS_DTYPES` spells it (``torch.float32`` → ``float32``)."""
    return str(dtype).removeprefix("torch.")


def load_bin(path: Path, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """A ``.bin`` / ``.pt`` state dict read ONLY with ``torch.load(weights_only=True)``: a pickle
    that carries code is refused with :class:`CheckpointError` before anything runs."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path.name} was refused: it is a pickle that does not hold plain tensors "
            f"(only weights_only loading is allowed): {str(e).splitlines()[0]}"
        ) from None
    except Exception as e:  # zip/format errors from torch.load
        raise CheckpointError(f"{path.name} is not a readable torch checkpoint: {e}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path.name} does not hold a state dict of tensors")
    return obj


def bin_meta(path: Path) -> TensorMeta:
    """``name → (shape, torch dtype name)`` of a ``.bin`` state dict (memory-mapped, not read)."""
    return {k: (tuple(t.shape), dtype_name(t.dtype)) for k, t in load_bin(path, mmap=True).items()}


def label_info(config: dict[str, Any]) -> tuple[int, dict[str, int]]:
    """``(num_labels, label2id)`` of a classification config dict.

    ``transformers`` omits the default two labels (``LABEL_0``, ``LABEL_1``) from
    ``config.json``, so they are filled in here.
    """
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        n = len(id2label)
        l2i = config.get("label2id")
        if not isinstance(l2i, dict) or not l2i:
            l2i = {str(v): int(k) for k, v in id2label.items()}
        return n, {str(k): int(v) for k, v in l2i.items()}
    n = int(config.get("num_labels", 2))
    return n, {f"LABEL_{i}": i for i in range(n)}


def read_config(config_dir: Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint as a dict (it must name its ``model_type``)."""
    p = Path(config_dir) / "config.json"
    try:
        cfg = json.loads(p.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"no config.json in {config_dir}") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"unreadable config.json in {config_dir}: {e}") from None
    if not isinstance(cfg, dict) or "model_type" not in cfg:
        raise CheckpointError(f"config.json in {config_dir} has no model_type")
    return cfg
