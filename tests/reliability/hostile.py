"""Hostile files for the bad-input test, built in memory from a real tiny model folder.

Every builder takes a seeded :class:`random.Random` and returns ``(filename, bytes)``;
nothing here touches the server. Files that would write somewhere if mishandled aim at
the test's marker folder, so "0 markers written" catches them all: path-traversal members,
absolute members, and pickles whose ``__reduce__`` creates a file.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import random
import stat
import tarfile
import zipfile
from pathlib import Path


def folder_files(model_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(model_dir).iterdir()) if p.is_file()}


def make_zip(files: dict[str, bytes], extra: list[zipfile.ZipInfo | tuple] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        for item in extra:
            info, data = item
            z.writestr(info, data)
    return buf.getvalue()


def make_tgz(
    files: dict[str, bytes],
    extra: list[tuple[tarfile.TarInfo, bytes | None]] = (),
    fmt: int = tarfile.PAX_FORMAT,
) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt) as t:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
        for info, data in extra:
            t.addfile(info, io.BytesIO(data) if data is not None else None)
    return gzip.compress(raw.getvalue(), compresslevel=6)


class Marker:
    """What a pickle's ``__reduce__`` runs when it is unpickled: creates ``path``."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def evil_pickle(marker: Path) -> bytes:
    return pickle.dumps({"bert.embeddings.word_embeddings.weight": Marker(str(marker))})


def evil_torch_zip(marker: Path) -> bytes:
    """``torch.save``'s zip layout with a ``data.pkl`` that creates ``marker``."""
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.zeros(2)}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                data = evil_pickle(marker)
            z.writestr(info, data)
    return out.getvalue()


# ---- the classes -----------------------------------------------------------------------------


def truncated(rng: random.Random, model: dict[str, bytes], marker_dir: Path):
    whole = make_zip(model) if rng.random() < 0.5 else make_tgz(model)
    cut = rng.randrange(1, len(whole) - 1)
    return ("model.zip" if whole[:2] == b"PK" else "model.tar.gz"), whole[:cut]


def wrong_magic(rng: random.Random, model: dict[str, bytes], marker_dir: Path):
    heads = [
        b"",
        b"\x89PNG\r\n\x1a\n",
        b"\x1f\x8b",
        b"PK\x03\x04",
        b"\x00" * 8,
        b'{"a":',
        b"%PDF-1.4",
        b"\x80\x04\x95",
    ]
    body = rng.choice(heads) + rng.randbytes(rng.randrange(0, 4096))
    return rng.choice(["model.zip", "model.tar.gz", "model.safetensors", "x.bin"]), body


def traversal(rng: random.Random, model: dict[str, bytes], marker_dir: Path):
    n = rng.randrange(10**9)
    target = str(marker_dir / f"traversal-{n}").lstrip("/")
    name = rng.choice(["../" * 12 + target, "/" + target, "sub/../../" + "../" * 10 + target])
    if rng.random() < 0.5:
        return "model.zip", make_zip(model, [(zipfile.ZipInfo(name), b"x")])
    info = tarfile.TarInfo(name)
    info.size = 1
    return "model.tar.gz", make_tgz(model, [(info, b"x")])


def links(rng: random.Random, model: dict[str, bytes], marker_dir: Path):
    n = rng.randrange(10**9)
    target = rng.choice(["/etc/passwd", "/dev/zero", str(marker_dir / f"link-{n}"), "../../.."])
    member = rng.choice(["leak.txt", "config.json", "model.safetensors", "sub/x"])
    if rng.random() < 0.5:
        info = zipfile.ZipInfo(member)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        files = {k: v for k, v in model.items() if k != member}
        return "model.zip", make_zip(files, [(info, target.encode())])
    info = tarfile.TarInfo(member)
    info.type = rng.choice([tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE])
    info.linkname = target
    if info.type == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 5  # /dev/zero
    files = {k: v for k, v in model.items() if k != member}
    return "model.tar.gz", make_tgz(files, [(info, None)])


def pickles(rng: random.Random, model: dict[str, bytes], marker_dir: Path):
    marker = marker_dir / f"pickle-{rng.randrange(10**9)}"
    payload = evil_torch_zip(marker) if rng.random() < 0.5 else evil_pickle(marker)
    name = rng.choice(["pytorch_model.bin", "training_args.bin", "model.pt", "optimizer.pt"])
    files = {"config.json": model["config.json"], name: payload}
    if name != "pytorch_model.bin" or rng.random() < 0.5:
        files = {**model, name: payload}  # next to good weights
    if rng.random() < 0.2:
        return "pytorch_model.bin", payload  # bare
    return (
        ("model.zip", make_zip(files)) if rng.random() < 0.5 else ("model.tar.gz", make_tgz(files))
    )


def huge_headers(rng: random.Random, model: dict[str, bytes], marker_dir: Path, size: int):
    kind = rng.choice(["pax-path", "gnu-longname", "pax-comment"])
    if kind == "gnu-longname":
        info = tarfile.TarInfo("a" * size)
        info.size = 1
        return "model.tar.gz", make_tgz(model, [(info, b"x")], fmt=tarfile.GNU_FORMAT)
    info = tarfile.TarInfo("x")
    info.size = 1
    key = "path" if kind == "pax-path" else "comment"
    info.pax_headers = {key: "b" * size}
    return "model.tar.gz", make_tgz(model, [(info, b"x")])


def many_entries(rng: random.Random, model: dict[str, bytes], marker_dir: Path, n: int):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in model.items():
            z.writestr(name, data)
        for i in range(n):
            z.writestr(f"e/{i}", b"")
    return "model.zip", buf.getvalue()


def lying_config(rng: random.Random, model: dict[str, bytes], marker_dir: Path):
    cfg = json.loads(model["config.json"])
    lie = rng.choice(
        [
            {"hidden_size": 8192, "intermediate_size": 32768},
            {"num_hidden_layers": 512},
            {"vocab_size": 10**9},
            {"max_position_embeddings": 10**8},
            {"num_attention_heads": 3, "hidden_size": 10**6},
        ]
    )
    cfg.update(lie)
    files = {**model, "config.json": json.dumps(cfg).encode()}
    if rng.random() < 0.3:
        files["config.json"] = rng.choice([b"{", b"[]", b"null", b'{"model_type": "nope"}'])
    return (
        ("model.zip", make_zip(files)) if rng.random() < 0.5 else ("model.tar.gz", make_tgz(files))
    )


def bad_dataset(rng: random.Random, model: dict[str, bytes], marker_dir: Path):
    body = rng.choice(
        [
            rng.randbytes(rng.randrange(1, 4096)),
            b"\xff\xfe" + "text,label\n".encode("utf-16-le"),
            b"a,b\n1,2\n" * 10,  # no column any task can use
            b'{"text": "a", "label": 1}\n{broken\n',
            ("," * 20000 + "\n").encode(),
            b"text,label\n" + b"a," * 5000 + b"\n",
        ]
    )
    return rng.choice(["x.csv", "x.jsonl", "x.tsv", "x.txt", "../x.csv", "x:y.csv"]), body
