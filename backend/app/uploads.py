"""Receiving uploads safely: stream to ``<store>/tmp/`` with a size cap, then validate.

Nothing here holds an upload in memory: the request body is read chunk by chunk
(``request.stream()``) into a file inside a store workspace (``Store.workspace()``),
counting bytes as they arrive — beyond ``Settings.max_upload_bytes`` the upload is
refused (:class:`~service.errors.PayloadTooLarge`, 413; a ``Content-Length``
over the cap is refused before reading).
The format is told by the bytes, never the name:

- ``PK\\x03\\x04`` → zip archive of a Hugging Face model directory;
- ``\\x1f\\x8b`` → gzip, read as a ``.tar.gz`` of a model directory;
- otherwise a safetensors header (u64 length + ``{``) → a bare state dict that needs
  ``config=<checkpoint>``.

Archives are checked by :mod:`service.archives` before and while they are extracted (headers
and directories bounded first; no absolute paths, no ``..``, no links, no device files or FIFOs,
at most ``BASIN_MAX_ARCHIVE_MEMBERS``, and an extracted total of at most the upload cap and
what the store's quota ``BASIN_MAX_STORE_BYTES`` has left). An upload's own bytes are
capped the same way (:class:`UploadCap`). Then the store validates the model (config loads, safetensors structure, ``.bin`` only via
``weights_only``) and renames it into place. The workspace is removed whatever
happens, so a refused or aborted upload leaves nothing behind.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from python_multipart.multipart import MultipartParser, parse_options_header

from basin import strict_json
from basin.errors import BasinError, CheckpointError, DatasetError
from basin.formats import safetensors_header_length
from service.archives import (  # re-exported: the archive checks used to live here
    ArchiveLimits,
    check_tar_headers,
    check_zip_directory,
    extract_tar,
    extract_zip,
)
from service.errors import InvalidUpload, PayloadTooLarge
from service.settings import Settings
from service.store import Added, Store

if TYPE_CHECKING:  # python_multipart declares its callback types for type checkers only
    from python_multipart.multipart import MultipartCallbacks

logger = logging.getLogger(__name__)

CHUNK_FLUSH = 1 << 20  # write to disk in pieces of about 1 MiB
MAX_FIELD_BYTES = 64 * 1024


#: OpenAPI text for a raw streamed body (``PUT``): the bytes of the file itself.
RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


def created_or_existing(response: Any, added: Added) -> dict[str, Any]:
    """201 with the new manifest, or 200 with the stored one when the content was already there."""
    response.status_code = 201 if added.created else 200
    return added.manifest


def form_body(*fields: str) -> dict[str, Any]:
    """OpenAPI text for a multipart upload: a required ``file`` plus string ``fields``."""
    props: dict[str, Any] = {"file": {"type": "string", "format": "binary"}}
    props.update({f: {"type": "string"} for f in fields})
    schema = {"type": "object", "required": ["file"], "properties": props}
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}}
    }


#: While an upload arrives, the store's quota is checked again every this many bytes (and at
#: its end): uploads in progress each saw the same free space when they started.
QUOTA_RECHECK_BYTES = 8 << 20


class UploadCap(int):
    """A byte cap for one upload; ``by_quota`` when the store's quota, not the upload
    limit, sets it (the error then says so).

    The cap is what the quota had left when the upload *started*. Uploads running at the
    same time each saw that free space, so :meth:`over_quota` is asked again while the bytes
    arrive (every :data:`QUOTA_RECHECK_BYTES`) and once they are all on disk: the bytes of
    every upload in progress count (they are under ``<store>/tmp/``), so two uploads that
    together exceed the quota cannot both be kept.
    """

    by_quota: bool = False
    store: Store | None = None
    quota: int | None = None

    @classmethod
    def of(cls, store: Store, settings: Settings) -> UploadCap:
        """``min(BASIN_MAX_UPLOAD_BYTES, what BASIN_MAX_STORE_BYTES has left)``, now."""
        free = store.free_bytes(settings.max_store_bytes)
        cap = cls(free) if free is not None and free < settings.max_upload_bytes else cls(settings.max_upload_bytes)
        cap.by_quota = cap < settings.max_upload_bytes
        cap.store, cap.quota = store, settings.max_store_bytes
        return cap

    def over_quota(self) -> bool:
        """Whether the store (uploads in progress included) is over its quota now."""
        return self.store is not None and self.quota is not None and self.store.used_bytes() > self.quota


async def check_quota(limit: int) -> None:
    """Refuse (413) when the store went over its quota while this upload arrived."""
    if isinstance(limit, UploadCap) and await run_in_threadpool(limit.over_quota):
        raise PayloadTooLarge(
            "upload refused: with the uploads arriving at the same time the store would exceed its "
            "quota (BASIN_MAX_STORE_BYTES); try again when they are done, delete checkpoints or "
            "datasets, or raise the quota"
        )


def too_large(limit: int) -> PayloadTooLarge:
    """The error for an upload over ``limit`` bytes."""
    if getattr(limit, "by_quota", False):
        return PayloadTooLarge(
            f"upload too large: the store has {int(limit):,} bytes left under its quota "
            "(BASIN_MAX_STORE_BYTES); delete checkpoints or datasets, or raise the quota"
        )
    return PayloadTooLarge(f"upload too large: the limit is {int(limit)} bytes (BASIN_MAX_UPLOAD_BYTES)")


def archive_limits(store: Store, settings: Settings) -> ArchiveLimits:
    """The caps for extracting an archive now: members, header size, and an expanded total of
    at most the upload limit and what the store's quota has left (the upload counted)."""
    cap = UploadCap.of(store, settings)
    return ArchiveLimits(
        members=settings.max_archive_members,
        header_bytes=settings.max_archive_header_bytes,
        expanded_bytes=int(cap),
        by_quota=cap.by_quota,
    )


def check_content_length(request: Request, limit: int) -> None:
    """Refuse up front when the declared ``Content-Length`` exceeds ``limit``."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            n = int(declared)
        except ValueError:
            raise HTTPException(status_code=400, detail="invalid Content-Length header") from None
        if n > limit:
            raise too_large(limit)


async def limited_stream(request: Request, limit: int) -> AsyncIterator[bytes]:
    """The request body chunk by chunk; raises :class:`PayloadTooLarge` as soon as more than
    ``limit`` bytes arrive."""
    check_content_length(request, limit)
    seen = 0
    recheck = QUOTA_RECHECK_BYTES
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise too_large(limit)
        if seen >= recheck:
            await check_quota(limit)
            recheck = seen + QUOTA_RECHECK_BYTES
        if chunk:
            yield chunk


async def receive_to_file(request: Request, dest: Path, limit: int) -> int:
    """Stream the raw body into ``dest`` (under the cap); returns the byte count."""
    total = 0
    buf = bytearray()
    with open(dest, "wb") as f:
        async for chunk in limited_stream(request, limit):
            buf += chunk
            total += len(chunk)
            if len(buf) >= CHUNK_FLUSH:
                f.write(buf)
                buf.clear()
        f.write(buf)
    if total == 0:
        raise InvalidUpload("the upload is empty")
    await check_quota(limit)
    return total


class _FormCollector:
    """Callbacks for ``python_multipart``'s parser: fields in memory, files straight to disk."""

    def __init__(self, workspace: Path):
        self.workspace = workspace
        self.fields: dict[str, str] = {}
        self.files: dict[str, tuple[str, Path]] = {}
        self._headers: dict[str, str] = {}
        self._hfield = bytearray()
        self._hvalue = bytearray()
        self._name = ""
        self._filename: str | None = None
        self._data = bytearray()
        self._file: IO[bytes] | None = None
        self._count = 0

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._hfield.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._hvalue.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._data = bytearray()
        self._filename = None

    def _header_end(self) -> None:
        self._headers[self._hfield.decode("latin-1").lower()] = self._hvalue.decode("latin-1")
        self._hfield.clear()
        self._hvalue.clear()

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get("content-disposition", ""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        fn = params.get(b"filename")
        if fn is not None:
            self._filename = fn.decode("utf-8", "replace")
            self._count += 1
            path = self.workspace / f"part-{self._count}"
            self.files[self._name] = (self._filename, path)
            self._file = open(path, "wb")  # noqa: SIM115 - closed in _part_end / close()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file.write(data[start:end])
        else:
            self._data.extend(data[start:end])
            if len(self._data) > MAX_FIELD_BYTES:
                raise PayloadTooLarge(f"form field {self._name!r} is too large")

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        else:
            self.fields[self._name] = self._data.decode("utf-8", "replace")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def receive_form(request: Request, workspace: Path, limit: int) -> _FormCollector:
    """Stream a ``multipart/form-data`` body: files into ``workspace``, fields into memory."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise HTTPException(status_code=415, detail="expected a multipart/form-data body")
    form = _FormCollector(workspace)
    parser = MultipartParser(params[b"boundary"], form.callbacks())
    try:
        async for chunk in limited_stream(request, limit):
            parser.write(chunk)
        parser.finalize()
    except (HTTPException, BasinError):  # our own refusals (a field too large) pass as they are
        raise
    except Exception as e:  # python_multipart raises its own parse errors
        raise HTTPException(status_code=400, detail=f"malformed multipart body: {e}") from None
    finally:
        form.close()
    await check_quota(limit)
    return form


def parse_tags(raw: str | None) -> dict[str, Any] | None:
    """Tags given as a JSON object in a query parameter or form field."""
    if raw is None or raw == "":
        return None
    try:
        tags = strict_json.loads(raw)  # finite numbers, bounded nesting
    except ValueError as e:
        raise CheckpointError(f'tags must be a JSON object, e.g. {{"seed": 1}}: {e}') from None
    if not isinstance(tags, dict):
        raise CheckpointError('tags must be a JSON object, e.g. {"seed": 1, "step": 100}')
    return tags


# ----------------------------------------------------------------------------- archives


def sniff(path: Path) -> str:
    """``zip``, ``tar.gz`` or ``safetensors`` from the first bytes; CheckpointError otherwise."""
    with open(path, "rb") as f:
        head = f.read(9)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(b"PK\x05\x06"):
        raise CheckpointError("the zip archive is empty")
    if head.startswith(b"\x1f\x8b"):
        return "tar.gz"
    if safetensors_header_length(head) is not None:
        return "safetensors"
    raise CheckpointError(
        "unrecognised upload: expected a .zip or .tar.gz of a model directory, or a "
        ".safetensors file (told by its bytes, not its name)"
    )


def model_root(extracted: Path) -> Path:
    """The folder holding ``config.json`` (a model) or ``adapter_config.json`` (a PEFT
    adapter): the archive's top level or its single subfolder."""

    def holds(d: Path) -> bool:
        return (d / "config.json").is_file() or (d / "adapter_config.json").is_file()

    if holds(extracted):
        return extracted
    entries = [p for p in extracted.iterdir() if p.name not in ("__MACOSX",)]
    if len(entries) == 1 and entries[0].is_dir() and holds(entries[0]):
        return entries[0]
    raise CheckpointError(
        "config.json is missing: the archive must hold a Hugging Face model directory "
        "(config.json and weights at its top level or in one folder) or a PEFT adapter "
        "(adapter_config.json and adapter_model.safetensors)"
    )


def ingest_checkpoint(
    store: Store,
    upload: Path,
    workspace: Path,
    *,
    name: str,
    config: str | None,
    tags: dict[str, Any] | None,
    limits: ArchiveLimits,
    base: str | None = None,
) -> Added:
    """Validate an uploaded file in ``workspace`` and move it into the store (blocking).

    ``base``: the base checkpoint of a PEFT adapter archive (default: the one its
    ``base_model_name_or_path`` names); refused for anything else."""
    kind = sniff(upload)
    if kind == "safetensors" and base:
        raise CheckpointError(
            "base= applies only to a PEFT adapter archive (adapter_config.json + adapter weights); "
            "a bare .safetensors names its config checkpoint with config="
        )
    if kind == "safetensors":
        if not config:
            raise CheckpointError(
                "a bare .safetensors upload needs config=<checkpoint id or name> to supply its config.json"
            )
        return store.import_safetensors(upload, config_ref=config, name=name, tags=tags, move=True)
    if config:
        raise CheckpointError(
            "config= applies only to a bare .safetensors upload; archives carry their own"
        )
    extracted = workspace / "extracted"
    extracted.mkdir()
    (extract_zip if kind == "zip" else extract_tar)(upload, extracted, limits)
    upload.unlink()
    root = model_root(extracted)
    if base and not (root / "adapter_config.json").is_file():
        raise CheckpointError(
            "base= applies only to a PEFT adapter archive (adapter_config.json + adapter weights); "
            "a model directory carries its own config"
        )
    return store.import_checkpoint(root, name=name, tags=tags, mode="move", base=base or None)


def ingest_dataset(store: Store, upload: Path, *, name: str, task: str | None) -> Added:
    """Validate an uploaded dataset file and move it into the store (blocking)."""
    if not name:
        raise DatasetError("a dataset upload needs a name ending in .jsonl, .csv or .tsv")
    return store.import_dataset(upload, name=name, task=task, move=True)


def clean_filename(filename: str | None, default: str) -> str:
    """The last component of a client-supplied file name (never a path)."""
    base = Path((filename or "").replace("\\", "/")).name.strip()
    return base or default


def strip_suffixes(filename: str) -> str:
    """``ft_a.tar.gz`` → ``ft_a``; used as a checkpoint's default name."""
    name = filename
    for suffix in (".gz", ".tar", ".zip", ".tgz", ".safetensors"):
        name = name.removesuffix(suffix)
    return name or filename


__all__ = [
    "ArchiveLimits",
    "UploadCap",
    "archive_limits",
    "check_tar_headers",
    "check_zip_directory",
    "clean_filename",
    "extract_tar",
    "extract_zip",
    "ingest_checkpoint",
    "ingest_dataset",
    "parse_tags",
    "receive_form",
    "receive_to_file",
    "sniff",
]
