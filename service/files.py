"""Files on disk the store reads or copies: folders the server was pointed at (registered or
copied checkpoints), walked without following links and opened regular-file-only, and the
byte counts the store's quota uses.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path

from basin.errors import CheckpointError
from service.errors import (
    QuotaExceeded,
    UnsafeSource,
)

#: A folder registered or copied from the server's disk may hold at most this many entries.
MAX_SOURCE_FILES = 10_000


# ----------------------------------------------------------------------------- files on disk
#
# Everything read from a folder the server was pointed at goes through these: each path
# component is opened relative to its parent's descriptor with O_NOFOLLOW, so a symbolic
# link anywhere (even one swapped in after a check) is never followed, and a file is
# used only when fstat says it is a regular file (O_NONBLOCK: a FIFO never blocks the open).


def _open_dir_fd(path: Path) -> int:
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def open_regular(root: Path, rel: str) -> int:
    """A read-only descriptor of the regular file ``root/rel``, never following a link.

    ``rel`` is a relative POSIX path without ``..``. Raises :class:`UnsafeSource` for a
    link or a special file and :class:`FileNotFoundError` when a component is missing.
    """
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise UnsafeSource(f"{rel!r} is not a relative path inside the folder")
    fd = _open_dir_fd(root)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise UnsafeSource(f"{rel}: {part} is a link or not a folder") from None
                raise
            os.close(fd)
            fd = nxt
        try:
            f = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise UnsafeSource(f"{rel} is a symbolic link") from None
            raise
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(f).st_mode):
        os.close(f)
        raise UnsafeSource(f"{rel} is not a regular file")
    return f


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def scan_source(root: Path, *, max_files: int = MAX_SOURCE_FILES) -> dict[str, int]:
    """``{relative path: size}`` of every regular file under ``root``, checked before any use.

    Refuses (:class:`UnsafeSource`, naming the entry) a symbolic link anywhere in the
    tree, a device, FIFO, socket or other special file, and more than ``max_files``
    entries. Nothing is followed and no file is opened.
    """
    files: dict[str, int] = {}
    count = 0

    def walk(fd: int, prefix: str) -> None:
        nonlocal count
        for name in sorted(os.listdir(fd)):
            count += 1
            if count > max_files:
                raise UnsafeSource(f"the folder holds more than {max_files} entries")
            rel = f"{prefix}{name}"
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode):
                files[rel] = st.st_size
            elif stat.S_ISDIR(st.st_mode):
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                try:
                    walk(sub, rel + "/")
                finally:
                    os.close(sub)
            else:
                raise UnsafeSource(
                    f"the folder holds {rel}, which is {_kind(st.st_mode)}: only regular files "
                    "and folders are accepted (no links, devices, FIFOs or sockets)"
                )

    try:
        top = _open_dir_fd(root)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeSource(f"{root.name} is a link or not a folder") from None
        raise
    try:
        walk(top, "")
    finally:
        os.close(top)
    return files


def copy_source(root: Path, files: Mapping[str, int], dest: Path, budget: list[int]) -> None:
    """Copy the regular files ``files`` (from :func:`scan_source`) of ``root`` into ``dest``.

    Each is opened with :func:`open_regular` (no link followed, regular files only) and its
    bytes are counted against ``budget[0]`` while copying (:class:`QuotaExceeded` beyond)."""
    dest.mkdir()
    for rel in sorted(files):
        target = dest.joinpath(*rel.split("/"))
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = open_regular(root, rel)
        with os.fdopen(fd, "rb") as src, open(target, "xb") as out:
            while chunk := src.read(1 << 20):
                budget[0] -= len(chunk)
                if budget[0] < 0:
                    raise QuotaExceeded(
                        "the store's quota (BASIN_MAX_STORE_BYTES) is exhausted: the folder is "
                        "larger than the space left"
                    )
                out.write(chunk)


def used_bytes(path: Path) -> int:
    """Bytes of the regular files under ``path`` (links not followed)."""
    total = 0
    for dirpath, _dirs, names in os.walk(path):
        for n in names:
            try:
                st = os.lstat(os.path.join(dirpath, n))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def allowed_source(path: Path | str, roots: Sequence[Path]) -> Path:
    """``path`` resolved, when it is a folder inside one of ``roots``; else CheckpointError.

    A missing path and one outside the roots get the same answer, so the error never tells
    which paths exist elsewhere on the server.
    """
    shown = ", ".join(str(r) for r in roots) or "none configured"
    refusal = CheckpointError(
        f"{str(path)!r} is not a folder inside this server's registration roots ({shown}; "
        "BASIN_REGISTER_ROOTS)"
    )
    try:
        resolved = Path(path).expanduser().resolve()
        real_roots = [Path(r).expanduser().resolve() for r in roots]
    except (OSError, RuntimeError, ValueError):
        raise refusal from None
    if not any(resolved.is_relative_to(r) for r in real_roots):
        raise refusal
    if not resolved.is_dir():
        raise refusal
    return resolved
