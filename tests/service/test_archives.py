"""Archive safety in one place (:mod:`service.archives`): uploads (``.tar.gz`` / ``.zip`` of a
model folder) and remote workers' downloads (a streamed flat ``.tar``) refuse the same
hostile members with the same checks, and a refused archive writes nothing outside its folder."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from basin.errors import CheckpointError
from service.archives import ArchiveLimits, extract_tar, extract_tar_stream


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]], *, gz: bool) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=tarfile.PAX_FORMAT) as tf:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tf.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tf.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def _special(name: str, kind: bytes, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


HOSTILE = {
    "dotdot": ([("../evil.txt", b"x")], "outside the archive"),
    "absolute": ([("/tmp/evil.txt", b"x")], "absolute path"),
    "symlink": ([_special("config.json", tarfile.SYMTYPE, "/etc/passwd")], "is a link"),
    "hardlink": ([("a", b"x"), _special("b", tarfile.LNKTYPE, "a")], "is a link"),
    "fifo": ([_special("pipe", tarfile.FIFOTYPE)], "device, FIFO"),
    "device": ([_special("dev", tarfile.CHRTYPE)], "device, FIFO"),
    "too many": ([(f"f{i}", b"") for i in range(6)], "more than 5 members"),
    "too big": ([("a", b"x" * 600), ("b", b"x" * 600)], "expands beyond 1,000 bytes"),
    "twice": ([("a", b"x"), ("a", b"y")], "twice"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
@pytest.mark.parametrize("consumer", ["upload", "fetch"])
def test_uploads_and_fetch_refuse_the_same_hostile_members(case, consumer, tmp_path):
    members, message = HOSTILE[case]
    limits = ArchiveLimits(members=5, expanded_bytes=1_000)
    dest = tmp_path / "a" / "out"
    dest.mkdir(parents=True)
    with pytest.raises(CheckpointError, match=message):
        if consumer == "upload":
            archive = tmp_path / "up.tar.gz"
            archive.write_bytes(_tar(members, gz=True))
            extract_tar(archive, dest, limits)
        else:
            extract_tar_stream(io.BytesIO(_tar(members, gz=False)), dest, limits)
    outside = [p for p in tmp_path.rglob("*") if dest not in (p, *p.parents) and p.name not in ("a", "up.tar.gz")]
    assert outside == []
    assert not any(p.is_symlink() for p in dest.rglob("*"))


def test_a_download_holds_flat_files_only_and_an_upload_may_hold_folders(tmp_path):
    members = [("model/config.json", b"{}"), ("model/model.safetensors", b"12")]
    up = tmp_path / "up"
    up.mkdir()
    archive = tmp_path / "up.tar.gz"
    archive.write_bytes(_tar(members, gz=True))
    extract_tar(archive, up, ArchiveLimits())
    assert (up / "model" / "config.json").read_bytes() == b"{}"
    down = tmp_path / "down"
    down.mkdir()
    with pytest.raises(CheckpointError, match="not a plain file name"):
        extract_tar_stream(io.BytesIO(_tar(members, gz=False)), down, ArchiveLimits())
    flat = [("config.json", b"{}"), ("model.safetensors", b"12")]
    assert extract_tar_stream(io.BytesIO(_tar(flat, gz=False)), down, ArchiveLimits()) == [
        "config.json", "model.safetensors"]
    assert sorted(p.name for p in Path(down).iterdir()) == ["config.json", "model.safetensors"]
    (tmp_path / "cut").mkdir()
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        extract_tar_stream(io.BytesIO(_tar(flat, gz=False)[:700]), tmp_path / "cut", ArchiveLimits())
