"""Receiving uploads safely: stream to ``<store>/tmp/`` with a size cap, then validate.

Nothing here holds an upload in memory: the request body is read chunk by chunk
(``request.stream()``) into a file inside a store workspace (``Store.workspace()``),
counting bytes as they arrive — beyond ``Settings.max_upload_bytes`` the upload is
refused (:class:`~backend.app.api.errors.PayloadTooLarge`, 413; a ``Content-Length``
over the cap is refused before reading).
The format is told by the bytes, never the name:

- ``PK\\x03\\x04`` → zip archive of a Hugging Face model directory;
- ``\\x1f\\x8b`` → gzip, read as a ``.tar.gz`` of a model directory;
- otherwise a safetensors header (u64 length + ``{``) → a bare state dict that needs
  ``config=<checkpoint>``.

Archives are bounded before a parser holds anything big: a tar's 512-byte headers are
walked first (GNU long-name / long-link and pax headers over
``BASIN_MAX_ARCHIVE_HEADER_BYTES`` refused, members counted), a zip's end record and
central directory are read and counted before ``ZipFile`` lists them. Members are then
extracted one by one after checking them: no absolute paths, no ``..``, no links, no
device files or FIFOs, at most ``BASIN_MAX_ARCHIVE_MEMBERS``, and an extracted total of at
most the upload cap and what the store's quota (``BASIN_MAX_STORE_BYTES``) has left. An
upload's own bytes are capped the same way (:class:`UploadCap`). Then the
store validates the model (config loads, safetensors structure, ``.bin`` only via
``weights_only``) and renames it into place. The workspace is removed whatever
happens, so a refused or aborted upload leaves nothing behind.
"""

from __future__ import annotations

import gzip
import logging
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from fastapi import HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from python_multipart.multipart import MultipartParser, parse_options_header

from backend.app.api.errors import InvalidUpload, PayloadTooLarge
from basin import strict_json
from basin.errors import BasinError, CheckpointError, DatasetError
from service.settings import Settings
from service.store import Added, Store

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

    def callbacks(self) -> dict[str, Any]:
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
    if len(head) == 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n < 100_000_000:
            return "safetensors"
    raise CheckpointError(
        "unrecognised upload: expected a .zip or .tar.gz of a model directory, or a "
        ".safetensors file (told by its bytes, not its name)"
    )


def _safe_member(name: str) -> PurePosixPath:
    """A member path that stays inside the extraction folder, or CheckpointError."""
    if "\\" in name or "\x00" in name:
        raise CheckpointError(f"archive member {name!r} has a backslash or NUL in its name")
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise CheckpointError(f"archive member {name!r} has an absolute path")
    if ".." in p.parts:
        raise CheckpointError(f"archive member {name!r} points outside the archive ('..')")
    parts = [x for x in p.parts if x not in ("", ".")]
    if not parts:
        raise CheckpointError(f"archive member {name!r} has an empty name")
    return PurePosixPath(*parts)


@dataclass(frozen=True)
class ArchiveLimits:
    """What an uploaded archive may hold (from :class:`~service.settings.Settings`).

    ``members``: files and folders; ``header_bytes``: one tar long-name / long-link /
    pax header; ``expanded_bytes``: the extracted total (the upload cap, and never more
    than the store's quota has left). The zip central directory may take at most
    ``members`` × 1 KiB.
    """

    members: int = 10_000
    header_bytes: int = 64 * 1024
    expanded_bytes: int = 4 * 1024**3
    #: the store's quota, not the upload limit, sets ``expanded_bytes`` (then a 413)
    by_quota: bool = False

    @property
    def directory_bytes(self) -> int:
        return self.members * 1024


def _expands_too_far(limits: ArchiveLimits) -> BasinError:
    if limits.by_quota:
        return PayloadTooLarge(
            f"the archive expands beyond the {limits.expanded_bytes:,} bytes the store has left "
            "under its quota (BASIN_MAX_STORE_BYTES)"
        )
    return CheckpointError(
        f"the archive expands beyond {limits.expanded_bytes:,} bytes (the upload limit "
        "BASIN_MAX_UPLOAD_BYTES, or what the store's quota BASIN_MAX_STORE_BYTES has left)"
    )


def _copy_limited(src: IO[bytes], dst: Path, budget: list[int], limits: ArchiveLimits) -> None:
    with open(dst, "xb") as out:
        while chunk := src.read(CHUNK_FLUSH):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise _expands_too_far(limits)
            out.write(chunk)


# ---- zip: the end records first, then a walk of the central directory, then ZipFile

_EOCD = struct.Struct("<4s4H2LH")  # signature, disks, entries here, entries, cd size, cd offset, comment
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CD_ENTRY = struct.Struct("<4s6H3L5H2L")  # central directory file header, 46 bytes


def check_zip_directory(archive: Path, limits: ArchiveLimits) -> None:
    """Refuse a zip whose central directory is too large, before ``ZipFile`` lists it.

    Reads the end-of-central-directory record (and its zip64 form) from the file's tail:
    more than ``limits.members`` entries, or a directory over ``limits.directory_bytes``,
    is refused; then the directory's records are counted one by one (without building
    anything), so a record count that lies is caught too.
    """
    size = archive.stat().st_size
    with open(archive, "rb") as f:
        tail_len = min(size, _EOCD.size + 0xFFFF)
        f.seek(size - tail_len)
        tail = f.read(tail_len)
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or at + _EOCD.size > len(tail):
            raise CheckpointError("corrupt or unreadable zip archive: no end-of-central-directory record")
        eocd_pos = size - tail_len + at
        _, _, _, _, entries, cd_size, cd_offset, _ = _EOCD.unpack_from(tail, at)
        cd_end = eocd_pos
        if entries == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
            loc_pos = eocd_pos - _ZIP64_LOCATOR.size
            if loc_pos < 0:
                raise CheckpointError("corrupt zip archive: a zip64 record is missing")
            f.seek(loc_pos)
            sig, _, z64_pos, _ = _ZIP64_LOCATOR.unpack(f.read(_ZIP64_LOCATOR.size))
            if sig != b"PK\x06\x07":
                raise CheckpointError("corrupt zip archive: a zip64 record is missing")
            rec_pos = loc_pos - _ZIP64_EOCD.size
            f.seek(max(0, rec_pos))
            rec = f.read(_ZIP64_EOCD.size)
            if len(rec) != _ZIP64_EOCD.size or rec[:4] != b"PK\x06\x06":
                raise CheckpointError("corrupt zip archive: bad zip64 end record")
            _, _, _, _, _, _, _, entries, cd_size, _ = _ZIP64_EOCD.unpack(rec)
            cd_end = rec_pos
        if entries > limits.members:
            raise CheckpointError(
                f"the archive declares {entries:,} members; the limit is {limits.members:,} "
                "(BASIN_MAX_ARCHIVE_MEMBERS)"
            )
        if cd_size > limits.directory_bytes:
            raise CheckpointError(
                f"the archive's central directory takes {cd_size:,} bytes; the limit is "
                f"{limits.directory_bytes:,} (1 KiB per allowed member)"
            )
        if cd_size > cd_end:
            raise CheckpointError("corrupt zip archive: the central directory does not fit the file")
        f.seek(cd_end - cd_size)
        directory = f.read(cd_size)
    pos = count = 0
    while pos + _CD_ENTRY.size <= len(directory):
        fields = _CD_ENTRY.unpack_from(directory, pos)
        if fields[0] != b"PK\x01\x02":
            break
        count += 1
        if count > limits.members:
            raise CheckpointError(
                f"the archive has more than {limits.members:,} members (BASIN_MAX_ARCHIVE_MEMBERS)"
            )
        name_len, extra_len, comment_len = fields[10], fields[11], fields[12]
        pos += _CD_ENTRY.size + name_len + extra_len + comment_len


def extract_zip(archive: Path, dest: Path, limits: ArchiveLimits) -> None:
    """Extract a zip after checking every member (paths, type); CheckpointError on anything odd."""
    try:
        check_zip_directory(archive, limits)
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            if len(infos) > limits.members:
                raise CheckpointError(f"the archive has more than {limits.members} members")
            for info in infos:
                _safe_member(info.filename)
                mode = info.external_attr >> 16
                kind = stat.S_IFMT(mode)
                if stat.S_ISLNK(mode):
                    raise CheckpointError(f"archive member {info.filename!r} is a symbolic link")
                if kind and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                    raise CheckpointError(f"archive member {info.filename!r} is not a regular file")
            if sum(i.file_size for i in infos) > limits.expanded_bytes:
                raise _expands_too_far(limits)
            budget = [limits.expanded_bytes]
            for info in infos:
                rel = _safe_member(info.filename)
                target = dest.joinpath(*rel.parts)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src:
                    _copy_limited(src, target, budget, limits)
    except CheckpointError:
        raise
    except FileExistsError as e:
        raise CheckpointError(
            f"the archive holds the same file twice: {Path(e.filename).name}"
        ) from None
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        EOFError,
        OSError,
        ValueError,
        NotImplementedError,
        RuntimeError,
        struct.error,
    ) as e:
        raise CheckpointError(f"corrupt or unreadable zip archive: {e}") from None


# ---- tar: the 512-byte headers are read here first, then tarfile extracts

_TAR_META = {
    b"L": "GNU long-name",
    b"K": "GNU long-link",
    b"x": "pax",
    b"g": "pax global",
    b"X": "Solaris extended",
}
_BLOCK = 512


def _tar_size(field: bytes) -> int:
    """A tar header's size field: octal digits, or GNU base-256 (first byte 0x80)."""
    if field[0] == 0o200:
        return int.from_bytes(field[1:], "big")
    if field[0] & 0x80:
        raise ValueError("negative size")
    digits = field.split(b"\0", 1)[0].strip()
    return int(digits or b"0", 8)


def _skip(stream: IO[bytes] | gzip.GzipFile, n: int) -> None:
    while n > 0:
        got = stream.read(min(n, CHUNK_FLUSH))
        if not got:
            raise CheckpointError("corrupt .tar.gz archive: it ends inside a member")
        n -= len(got)


def check_tar_headers(archive: Path, limits: ArchiveLimits) -> None:
    """Walk a ``.tar.gz``'s headers before ``tarfile`` reads any of them.

    ``tarfile`` reads a GNU long-name / long-link or pax header whole into memory, so a
    small upload with one huge such header costs hundreds of MB. Here each 512-byte
    header is decoded on its own: a long-name, long-link or pax header over
    ``limits.header_bytes`` is refused, members are counted (``limits.members``), and
    every byte of the decompressed stream counts against ``limits.expanded_bytes``
    (a gzip bomb stops early). Data is skipped in 1 MiB reads, never held.
    """
    members = meta_run = 0
    seen = 0
    with gzip.open(archive, "rb") as g:
        while True:
            block = g.read(_BLOCK)
            if not block:
                return  # no end-of-archive blocks: tarfile accepts that too
            if len(block) < _BLOCK:
                raise CheckpointError("corrupt .tar.gz archive: it ends inside a header")
            if block == b"\0" * _BLOCK:
                return
            try:
                size = _tar_size(block[124:136])
            except ValueError:
                raise CheckpointError("corrupt .tar.gz archive: a header has an unreadable size") from None
            kind = block[156:157]
            if kind in _TAR_META:
                meta_run += 1
                if size > limits.header_bytes:
                    raise CheckpointError(
                        f"the archive has a {_TAR_META[kind]} header of {size:,} bytes; the limit "
                        f"is {limits.header_bytes:,} (BASIN_MAX_ARCHIVE_HEADER_BYTES)"
                    )
                if meta_run > 8:
                    raise CheckpointError("corrupt .tar.gz archive: too many extended headers in a row")
            else:
                meta_run = 0
                members += 1
                if members > limits.members:
                    raise CheckpointError(
                        f"the archive has more than {limits.members:,} members "
                        "(BASIN_MAX_ARCHIVE_MEMBERS)"
                    )
            padded = -(-size // _BLOCK) * _BLOCK
            seen += _BLOCK + padded
            if seen > limits.expanded_bytes + _BLOCK * 3 * limits.members:
                raise _expands_too_far(limits)
            _skip(g, padded)


def extract_tar(archive: Path, dest: Path, limits: ArchiveLimits) -> None:
    """Extract a ``.tar.gz`` after checking its headers and every member; links and devices are refused."""
    try:
        check_tar_headers(archive, limits)
        with tarfile.open(archive, mode="r:gz") as tf:
            budget = [limits.expanded_bytes]
            count = 0
            for m in tf:
                count += 1
                if count > limits.members:
                    raise CheckpointError(f"the archive has more than {limits.members} members")
                rel = _safe_member(m.name)
                if m.issym() or m.islnk():
                    raise CheckpointError(f"archive member {m.name!r} is a link")
                if not (m.isreg() or m.isdir()):
                    raise CheckpointError(
                        f"archive member {m.name!r} is a device, FIFO or other special file"
                    )
                target = dest.joinpath(*rel.parts)
                if m.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(m)
                if src is None:
                    raise CheckpointError(f"archive member {m.name!r} cannot be read")
                with src:
                    _copy_limited(src, target, budget, limits)
    except CheckpointError:
        raise
    except FileExistsError as e:
        raise CheckpointError(
            f"the archive holds the same file twice: {Path(e.filename).name}"
        ) from None
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
        raise CheckpointError(f"corrupt or unreadable .tar.gz archive: {e}") from None


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
