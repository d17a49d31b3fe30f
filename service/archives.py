"""Archive safety, in one place: what an archive may hold before anything of it lands on disk.

Used by uploads (:mod:`backend.app.uploads`: ``.zip`` and ``.tar.gz`` of a model directory)
and by remote workers' downloads (:mod:`workers.fetch`: a streamed ``.tar``). Archives are
bounded before a parser holds anything big: a tar's 512-byte headers are walked first (GNU
long-name / long-link and pax headers over ``ArchiveLimits.header_bytes`` refused, members
counted), a zip's end record and central directory are read and counted before ``ZipFile``
lists them. Members are then extracted one by one after checking them: no absolute paths,
no ``..``, no links, no device files or FIFOs, at most ``ArchiveLimits.members``, and an
extracted total of at most ``ArchiveLimits.expanded_bytes``. Refusals raise
:class:`~basin.errors.CheckpointError` (or :class:`~service.errors.PayloadTooLarge` when the
store's quota, not the upload limit, set the byte cap).
"""

from __future__ import annotations

import gzip
import re
import stat
import struct
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Protocol, cast

from basin.errors import BasinError, CheckpointError
from service.errors import PayloadTooLarge

CHUNK_FLUSH = 1 << 20  # write to disk in pieces of about 1 MiB


class Readable(Protocol):
    """What a streamed tar is read from: ``read`` is all tarfile's ``r|`` mode calls."""

    def read(self, n: int = -1, /) -> bytes: ...


#: A member name of a flat archive (remote workers' downloads: files only, no dot files).
FLAT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,254}$")


def safe_member(name: str, *, flat: bool = False) -> PurePosixPath:
    """A member path that stays inside the extraction folder, or CheckpointError; ``flat``:
    a plain file name (:data:`FLAT_NAME`), no folder."""
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
    if flat and (len(parts) != 1 or not FLAT_NAME.match(parts[0])):
        raise CheckpointError(f"archive member {name!r} is not a plain file name")
    return PurePosixPath(*parts)


@dataclass(frozen=True)
class ArchiveLimits:
    """What an archive may hold (for uploads, from :class:`~service.settings.Settings`).

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
                safe_member(info.filename)
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
                rel = safe_member(info.filename)
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


def _extract_tar_members(tf: tarfile.TarFile, dest: Path, limits: ArchiveLimits, *, flat: bool) -> list[str]:
    """Extract ``tf``'s members one by one after checking each; returns their paths."""
    budget = [limits.expanded_bytes]
    names: list[str] = []
    for m in tf:
        if len(names) >= limits.members:
            raise CheckpointError(f"the archive has more than {limits.members} members")
        rel = safe_member(m.name, flat=flat)
        if m.issym() or m.islnk():
            raise CheckpointError(f"archive member {m.name!r} is a link")
        if not (m.isreg() or m.isdir()):
            raise CheckpointError(f"archive member {m.name!r} is a device, FIFO or other special file")
        if flat and not m.isreg():
            raise CheckpointError(f"archive member {m.name!r} is not a regular file")
        names.append(rel.as_posix())
        target = dest.joinpath(*rel.parts)
        if m.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        if m.size > budget[0]:
            raise _expands_too_far(limits)
        target.parent.mkdir(parents=True, exist_ok=True)
        src = tf.extractfile(m)
        if src is None:
            raise CheckpointError(f"archive member {m.name!r} cannot be read")
        with src:
            _copy_limited(src, target, budget, limits)
    return names


def extract_tar(archive: Path, dest: Path, limits: ArchiveLimits) -> None:
    """Extract a ``.tar.gz`` after checking its headers and every member; links and devices are refused."""
    try:
        check_tar_headers(archive, limits)
        with tarfile.open(archive, mode="r:gz") as tf:
            _extract_tar_members(tf, dest, limits, flat=False)
    except CheckpointError:
        raise
    except FileExistsError as e:
        raise CheckpointError(
            f"the archive holds the same file twice: {Path(e.filename).name}"
        ) from None
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:
        raise CheckpointError(f"corrupt or unreadable .tar.gz archive: {e}") from None


def extract_tar_stream(stream: Readable, dest: Path, limits: ArchiveLimits) -> list[str]:
    """Extract a streamed, uncompressed tar of flat regular files (what a remote worker
    downloads) into ``dest`` with the same member checks; returns the file names.

    Refused (:class:`CheckpointError`): names with a folder, ``..``, a leading dot or odd
    characters; links, devices, FIFOs, folders; a name twice; more than ``limits.members``
    members or ``limits.expanded_bytes`` in all; a truncated or corrupt stream; no member.
    """
    try:
        # typeshed asks a file object for seek/tell/write too, which stream mode never calls
        with tarfile.open(fileobj=cast("IO[bytes]", stream), mode="r|") as tf:
            names = _extract_tar_members(tf, dest, limits, flat=True)
    except CheckpointError:
        raise
    except FileExistsError as e:
        raise CheckpointError(f"the archive holds {Path(e.filename).name!r} twice") from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"truncated or corrupt archive: {e}") from None
    if not names:
        raise CheckpointError("the archive is empty")
    return names
