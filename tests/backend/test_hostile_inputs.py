"""What an attacker sends the registry, on the real app and real tiny checkpoints.

Registration of server folders (off by default, only inside BASIN_REGISTER_ROOTS, no
links or special files), archives whose headers would make a parser allocate hundreds
of MB, the store's total quota, and configs that lie about their weights. Each refusal
is a clear 4xx and leaves the store as it was (nothing in ``tmp/``, nothing copied).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import struct
import tarfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import pytest

from backend.app.uploads import ArchiveLimits, extract_tar, extract_zip
from basin.errors import CheckpointError
from tests.backend.conftest import file_sizes, serve, store_state, targz_dir, wait_for, zip_dir

EMPTY = {"checkpoints": [], "datasets": [], "tmp": []}
OCTET = {"Content-Type": "application/octet-stream"}


def put(client, body: bytes, name: str = "x"):
    return client.put("/api/checkpoints", params={"name": name}, content=body, headers=OCTET)


def register(client, path: Path, name: str = "x", copy: bool = False):
    return client.post(
        "/api/checkpoints/register", json={"path": str(path), "name": name, "copy": copy}
    )


@pytest.fixture
def allowed(tmp_path) -> Path:
    root = tmp_path / "allowed"
    root.mkdir()
    return root


@pytest.fixture
def rooted(make_client, allowed):
    """A client whose server may register folders under ``allowed`` only."""
    return make_client(register_roots=[allowed])


def model_copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ----------------------------------------------------------------------------- registration


def test_registration_is_off_unless_roots_are_configured(client, classifier_family):
    r = register(client, classifier_family["ft_a"], copy=True)
    assert r.status_code == 403
    assert "BASIN_REGISTER_ROOTS" in r.json()["detail"]
    assert store_state(client.store_root) == EMPTY


def test_outside_the_roots_and_missing_paths_get_the_same_answer(
    rooted, allowed, classifier_family, tmp_path
):
    outside = classifier_family["ft_a"]  # exists, holds a valid model
    missing_outside = tmp_path / "nowhere"
    missing_inside = allowed / "nowhere"
    escape = allowed / "escape"
    escape.symlink_to(outside)  # resolves outside the roots
    answers = []
    for path in (outside, missing_outside, missing_inside, escape, Path("/etc")):
        r = register(rooted, path, copy=True)
        assert r.status_code == 422, r.text
        answers.append(r.json()["detail"].replace(str(path), "<path>"))
    assert len(set(answers)) == 1, answers
    assert "not a folder inside this server's registration roots" in answers[0]
    assert store_state(rooted.store_root) == EMPTY


@pytest.mark.parametrize("copy", [True, False])
@pytest.mark.parametrize("hazard", ["leak_link", "dev_zero_link", "fifo", "nested_link"])
def test_a_folder_holding_links_or_special_files_is_refused_before_any_copy(
    rooted, allowed, classifier_family, hazard, copy
):
    src = model_copy(classifier_family["ft_a"], allowed / "model")
    if hazard == "leak_link":
        (src / "leak.txt").symlink_to("/etc/passwd")
        culprit, kind = "leak.txt", "symbolic link"
    elif hazard == "dev_zero_link":
        (src / "zeros.bin").symlink_to("/dev/zero")
        culprit, kind = "zeros.bin", "symbolic link"
    elif hazard == "fifo":
        os.mkfifo(src / "pipe.json")
        culprit, kind = "pipe.json", "FIFO"
    else:
        (src / "sub").mkdir()
        (src / "sub" / "vocab.txt").symlink_to("/etc/passwd")
        culprit, kind = "sub/vocab.txt", "symbolic link"
    r = register(rooted, src, copy=copy)
    assert r.status_code == 422, r.text
    assert culprit in r.json()["detail"] and kind in r.json()["detail"]
    assert store_state(rooted.store_root) == EMPTY
    assert rooted.get("/api/checkpoints").json() == []


def test_a_registered_folder_is_served_from_its_validated_files_only(
    rooted, allowed, classifier_family
):
    src = model_copy(classifier_family["ft_b"], allowed / "model")
    r = register(rooted, src, name="ft-b")
    assert r.status_code == 201, r.text
    assert set(r.json()["files"]) == {p.name for p in src.iterdir()}

    (src / "leak.json").symlink_to("/etc/passwd")  # added after registration
    (src / "extra.json").write_text("{}")  # a regular file added later is not served either
    archive = rooted.get("/api/checkpoints/ft-b/archive")
    assert archive.status_code == 200
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tf:
        names = set(tf.getnames())
    assert "leak.json" not in names and "extra.json" not in names
    assert {"config.json", "model.safetensors"} <= names
    assert b"root:" not in archive.content

    (src / "config.json").unlink()
    (src / "config.json").symlink_to("/etc/passwd")  # a validated name swapped for a link
    swapped = rooted.get("/api/checkpoints/ft-b/archive")
    assert swapped.status_code == 409
    assert b"root:" not in swapped.content


def test_a_dataset_file_swapped_for_a_link_is_not_served(client, classifier_family):
    m = client.put(
        "/api/datasets",
        params={"name": "eval.csv"},
        content=classifier_family["data"].read_bytes(),
        headers=OCTET,
    ).json()
    assert client.get("/api/datasets/eval.csv/file").content == classifier_family["data"].read_bytes()
    stored = Path(m["path"])
    stored.unlink()
    stored.symlink_to("/etc/passwd")
    r = client.get("/api/datasets/eval.csv/file")
    assert r.status_code == 409 and b"root:" not in r.content


# ----------------------------------------------------------------------------- archives


def _tar_header(name: bytes, size: int, kind: bytes) -> bytes:
    h = bytearray(512)
    h[0 : len(name)] = name
    h[100:108] = b"0000644\0"
    h[108:116] = h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"00000000000\0"
    h[156:157] = kind
    h[257:263] = b"ustar\0"
    h[263:265] = b"00"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def huge_header_targz(kind: bytes, size: int = 64 * 1024 * 1024) -> bytes:
    """A valid .tar.gz whose first header is a ``kind`` header of ``size`` bytes (compressed
    to a few dozen KB): what made tarfile hold hundreds of MB."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9) as gz:
        gz.write(_tar_header(b"././@LongLink" if kind in b"LK" else b"pax", size, kind))
        block = b"a" * (1 << 20)
        for _ in range(size // len(block)):
            gz.write(block)
        gz.write(_tar_header(b"config.json", 0, b"0"))
        gz.write(b"\0" * 1024)
    return out.getvalue()


def zip_with_entries(n: int, *, declared: int | None = None) -> bytes:
    """A real zip of ``n`` empty members, written record by record (zip64 end records when
    needed); ``declared`` sets the count the end records claim."""
    local, central = io.BytesIO(), io.BytesIO()
    crc = zlib.crc32(b"")
    for i in range(n):
        name = b"f%06d" % i
        offset = local.tell()
        local.write(struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 0, 0, 0, crc, 0, 0, len(name), 0))
        local.write(name)
        central.write(
            struct.pack(
                "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 0, 0, 0, crc, 0, 0,
                len(name), 0, 0, 0, 0, 0, offset,
            )
        )
        central.write(name)
    cd = central.getvalue()
    cd_offset = local.tell()
    count = n if declared is None else declared
    tail = io.BytesIO()
    if count > 0xFFFF:
        z64_pos = cd_offset + len(cd)
        tail.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, len(cd), cd_offset))
        tail.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, z64_pos, 1))
        tail.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, 0xFFFF, 0xFFFF, len(cd), cd_offset, 0))
    else:
        tail.write(struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, count, count, len(cd), cd_offset, 0))
    return local.getvalue() + cd + tail.getvalue()


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("kind, what", [(b"L", "GNU long-name"), (b"x", "pax")])
def test_a_huge_tar_header_is_refused_before_tarfile_reads_it(client, tmp_path, kind, what):
    body = huge_header_targz(kind)
    assert len(body) < 400_000  # a small upload ...
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(body)
    (tmp_path / "out").mkdir()

    def extract():
        with pytest.raises(CheckpointError, match=f"{what} header of 67,108,864 bytes"):
            extract_tar(archive, tmp_path / "out", ArchiveLimits())

    assert _peak(extract) < 8 * 1024 * 1024  # ... never held: tarfile would take 64+ MB
    got = {}
    peak = _peak(lambda: got.setdefault("r", put(client, body)))
    r = got["r"]
    assert r.status_code == 422, r.text
    assert f"{what} header" in r.json()["detail"] and "BASIN_MAX_ARCHIVE_HEADER_BYTES" in r.json()["detail"]
    assert peak < 16 * 1024 * 1024
    assert store_state(client.store_root) == EMPTY


def test_a_zip_claiming_300k_entries_is_refused_before_zipfile_lists_it(client, tmp_path):
    body = zip_with_entries(300_000)
    assert zipfile.ZipFile(io.BytesIO(zip_with_entries(3))).namelist() == ["f000000", "f000001", "f000002"]
    archive = tmp_path / "many.zip"
    archive.write_bytes(body)
    (tmp_path / "out").mkdir()

    def extract():
        with pytest.raises(CheckpointError, match="declares 300,000 members"):
            extract_zip(archive, tmp_path / "out", ArchiveLimits())

    assert _peak(extract) < 8 * 1024 * 1024  # ZipFile's listing of 300k entries: 150+ MB
    r = put(client, body)
    assert r.status_code == 422 and "BASIN_MAX_ARCHIVE_MEMBERS" in r.json()["detail"]
    assert store_state(client.store_root) == EMPTY


def test_a_zip_whose_end_record_understates_its_entries_is_refused(make_client, tmp_path):
    client = make_client(max_archive_members=100)
    r = put(client, zip_with_entries(500, declared=5))
    assert r.status_code == 422
    assert "more than 100 members" in r.json()["detail"]
    assert store_state(client.store_root) == EMPTY


def test_archive_caps_are_settings(make_client, classifier_family):
    client = make_client(max_archive_members=3)
    r = put(client, targz_dir(classifier_family["ft_a"]))
    assert r.status_code == 422 and "more than 3 members" in r.json()["detail"]
    assert store_state(client.store_root) == EMPTY


# ----------------------------------------------------------------------------- the quota


def test_the_store_quota_refuses_an_upload_that_would_exceed_it(make_client, classifier_family):
    body = zip_dir(classifier_family["ft_a"])
    client = make_client(max_store_bytes=3 * len(body))
    assert put(client, body, name="first").status_code == 201  # ~2.2x its zip on disk
    again = put(client, zip_dir(classifier_family["ft_b"]), name="second")
    assert again.status_code == 413, again.text
    assert "BASIN_MAX_STORE_BYTES" in again.json()["detail"]
    state = store_state(client.store_root)
    assert len(state["checkpoints"]) == 1 and state["tmp"] == []
    # a dataset too: the quota is one total for the whole store
    data = b"text,label\n" + b"good day,1\n" * 20_000
    d = client.put("/api/datasets", params={"name": "big.csv"}, content=data, headers=OCTET)
    assert d.status_code == 413 and store_state(client.store_root)["tmp"] == []


def test_two_uploads_at_once_cannot_both_fill_the_quota(tmp_path):
    """Both uploads start on an empty store, so each may take the whole quota; the one still
    arriving when the other is kept is refused once the store's total passes the quota, and the
    store ends within it with the first upload intact and nothing left in tmp/."""
    import socket

    import httpx

    from backend.app.main import create_app
    from service.settings import Settings

    mib = 1 << 20
    root = tmp_path / "store"
    quota = 20 * mib
    app = create_app(Settings(store=root, api_token=None, redis_url="redis://127.0.0.1:1/0",
                              max_store_bytes=quota, max_upload_bytes=64 * mib), with_ui=False)
    row = b"a good day today,1\n"
    slow = b"text,label\n" + row * (15 * mib // len(row))  # 15 MiB: fits the quota alone
    quick = b"text,label\n" + row * (8 * mib // len(row))  # 8 MiB: fits it alone, and beside the 9 MiB on disk
    head = (f"PUT /api/datasets?name=slow.csv HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {len(slow)}\r\n\r\n").encode()

    def tmp_bytes() -> int:
        return sum(file_sizes(root / "tmp"))

    with serve(app) as port:
        conn = socket.create_connection(("127.0.0.1", port))
        conn.sendall(head + slow[: 9 * mib])
        assert wait_for(lambda: tmp_bytes() >= 8 * mib)  # the slow upload is arriving on disk
        r = httpx.put(f"http://127.0.0.1:{port}/api/datasets", params={"name": "quick.csv"}, content=quick,
                      headers={"Content-Type": "application/octet-stream"}, timeout=300)
        assert r.status_code == 201, r.text
        conn.sendall(slow[9 * mib:])
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
        conn.close()
        assert reply.startswith(b"HTTP/1.1 413"), reply[:300]
        assert b"BASIN_MAX_STORE_BYTES" in reply and b"at the same time" in reply
        assert wait_for(lambda: store_state(root)["tmp"] == [])
    state = store_state(root)
    assert len(state["datasets"]) == 1 and state["tmp"] == []
    stored = sum(p.stat().st_size for p in (root / "datasets").rglob("*") if p.is_file())
    assert len(quick) <= stored <= quota


def test_an_archive_that_expands_past_the_quota_is_refused(make_client, classifier_family, tmp_path):
    d = model_copy(classifier_family["ft_a"], tmp_path / "padded")
    (d / "padding.txt").write_bytes(b"\0" * 4_000_000)  # compresses to almost nothing
    body = zip_dir(d)
    client = make_client(max_store_bytes=len(body) + 1_000_000)
    r = put(client, body)
    assert r.status_code == 413, r.text
    assert "expands beyond" in r.json()["detail"] and "BASIN_MAX_STORE_BYTES" in r.json()["detail"]
    assert store_state(client.store_root) == EMPTY


def test_a_registered_copy_counts_against_the_quota(make_client, allowed, classifier_family):
    client = make_client(register_roots=[allowed], max_store_bytes=10_000)
    src = model_copy(classifier_family["ft_a"], allowed / "model")
    r = register(client, src, copy=True)
    assert r.status_code == 413 and "BASIN_MAX_STORE_BYTES" in r.json()["detail"]
    assert store_state(client.store_root) == EMPTY


# ----------------------------------------------------------------------------- lying configs


@pytest.mark.parametrize(
    "change, says",
    [
        ({"hidden_size": 4096, "intermediate_size": 16384, "num_attention_heads": 32},
         "declares a model of 621.4M"),
        ({"num_hidden_layers": 100_000}, "num_hidden_layers = 100,000"),
        ({"num_labels": 7, "id2label": {str(i): f"l{i}" for i in range(7)},
          "label2id": {f"l{i}": i for i in range(7)}}, "classifier.weight"),
    ],
)
def test_a_config_that_lies_about_its_weights_is_refused_before_anything_is_built(
    client, classifier_family, tmp_path, change, says
):
    d = model_copy(classifier_family["ft_a"], tmp_path / "liar")
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, **change}))
    r = put(client, zip_dir(d), name="liar")
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "config.json does not match the weights" in detail and says in detail
    assert store_state(client.store_root) == EMPTY


def test_real_configs_of_other_families_fit_their_weights(client, gpt2_pair, t5_pair):
    for name, src in (("gpt2", gpt2_pair["a"]), ("t5", t5_pair["a"])):
        r = put(client, zip_dir(src), name=name)
        assert r.status_code == 201, r.text


def test_a_bare_safetensors_never_borrows_a_file_through_a_link(rooted, allowed, classifier_family):
    src = model_copy(classifier_family["init"], allowed / "init")
    assert register(rooted, src, name="init").status_code == 201
    (src / "tokenizer.json").unlink()
    (src / "tokenizer.json").symlink_to("/etc/passwd")  # swapped after registration
    weights = (classifier_family["ft_c"] / "model.safetensors").read_bytes()
    r = rooted.put(
        "/api/checkpoints", params={"name": "ft-c", "config": "init"}, content=weights, headers=OCTET
    )
    assert r.status_code == 422 and "tokenizer.json" in r.json()["detail"]
    assert store_state(rooted.store_root)["tmp"] == []
    assert [c["name"] for c in rooted.get("/api/checkpoints").json()] == ["init"]
