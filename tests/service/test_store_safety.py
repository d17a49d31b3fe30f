"""The store's own defences: folders it reads from the server's disk, its ``tmp/`` after a
crash, and configs checked against their weights — real files, real processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from basin.errors import CheckpointError
from service.store import QuotaExceeded, Store, UnsafeSource, open_regular, scan_source

REPO = Path(__file__).resolve().parents[2]

HOLD = """
import os, sys
from service.store import Store
with Store(sys.argv[1]).workspace() as ws:
    (ws / "upload").write_bytes(b"x" * 4096)
    print(ws.name, flush=True)
    if sys.argv[2] == "crash":
        os.kill(os.getpid(), 9)  # what the kernel does on out-of-memory
    sys.stdin.read()  # a live upload: held until the test closes stdin
"""


def _python(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, *args], env=env, text=True, **kw)


def test_a_crashed_workspace_is_swept_at_start_but_a_live_one_is_kept(tmp_path):
    root = tmp_path / "store"
    Store(root)
    live = _python("-c", HOLD, str(root), "hold", stdout=subprocess.PIPE, stdin=subprocess.PIPE)
    try:
        live_ws = live.stdout.readline().strip()
        crashed = _python("-c", HOLD, str(root), "crash", stdout=subprocess.PIPE)
        crashed_ws = crashed.stdout.readline().strip()
        assert crashed.wait() == -9
        (root / "tmp" / "del-0123").mkdir()  # a deletion cut short
        assert sorted(p.name for p in (root / "tmp").iterdir()) == sorted(
            [crashed_ws, live_ws, "del-0123"]
        )
        # a new process starting over the store (the API, a worker) sweeps tmp/
        start = _python("-c", "import sys; from service.store import Store; Store(sys.argv[1])", str(root))
        assert start.wait() == 0
        assert [p.name for p in (root / "tmp").iterdir()] == [live_ws]
        assert (root / "tmp" / live_ws / "upload").stat().st_size == 4096
    finally:
        live.stdin.close()
        assert live.wait() == 0
    assert list((root / "tmp").iterdir()) == []


def test_a_sweep_in_the_same_process_keeps_its_own_live_workspace(tmp_path):
    store = Store(tmp_path / "store")
    with store.workspace() as ws:
        (ws / "part").write_bytes(b"data")
        assert store.sweep_tmp() == []
        assert (ws / "part").read_bytes() == b"data"
    orphan = store.tmp_dir / "ws-deadbeef"  # left by a version without locks
    orphan.mkdir()
    assert store.sweep_tmp() == ["ws-deadbeef"]


def test_scan_refuses_links_devices_and_fifos_and_open_regular_never_follows(tmp_path):
    d = tmp_path / "m"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text("{}")
    (d / "sub" / "a.txt").write_text("a")
    assert scan_source(d) == {"config.json": 2, "sub/a.txt": 1}
    for make, kind in (
        (lambda p: p.symlink_to("/etc/passwd"), "symbolic link"),
        (lambda p: p.symlink_to("/dev/zero"), "symbolic link"),
        (os.mkfifo, "FIFO"),
    ):
        bad = d / "sub" / "bad"
        make(bad)
        with pytest.raises(UnsafeSource, match=f"sub/bad, which is a {kind}"):
            scan_source(d)
        with pytest.raises(UnsafeSource):
            open_regular(d, "sub/bad")
        bad.unlink()
    (d / "linkdir").symlink_to(d / "sub")
    with pytest.raises(UnsafeSource):
        open_regular(d, "linkdir/a.txt")


def test_copy_into_the_store_refuses_a_link_before_copying_anything(tmp_path, classifier_family):
    store = Store(tmp_path / "store")
    src = tmp_path / "model"
    shutil.copytree(classifier_family["ft_a"], src)
    (src / "zeros.bin").symlink_to("/dev/zero")
    with pytest.raises(UnsafeSource, match="zeros.bin"):
        store.add_checkpoint_dir(src, name="x")
    assert list(store.tmp_dir.iterdir()) == [] and store.list_checkpoints() == []
    (src / "zeros.bin").unlink()
    with pytest.raises(QuotaExceeded, match="BASIN_MAX_STORE_BYTES"):
        store.import_checkpoint(src, name="x", quota=1000)
    m = store.add_checkpoint_dir(src, name="x")
    assert set(m["files"]) == {p.name for p in src.iterdir()}
    assert store.used_bytes() == m["size_bytes"]


def test_the_config_is_checked_against_the_weights(tmp_path, classifier_family):
    store = Store(tmp_path / "store")
    src = tmp_path / "liar"
    shutil.copytree(classifier_family["ft_a"], src)
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "vocab_size": 10_000_000}))
    with pytest.raises(CheckpointError, match=r"declares a model of 320\.0M .*word_embeddings"):
        store.add_checkpoint_dir(src, name="liar")
    assert store.list_checkpoints() == [] and list(store.tmp_dir.iterdir()) == []


def test_basin_up_allows_its_demo_folder_besides_the_configured_roots(tmp_path, monkeypatch):
    from service.launch import register_roots

    monkeypatch.setenv("BASIN_REGISTER_ROOTS", f"/data/models{os.pathsep}/scratch")
    store = tmp_path / "store"
    assert register_roots(store, demo=True).split(os.pathsep) == [
        "/data/models", "/scratch", str(store.resolve() / "demo-src")
    ]
    assert register_roots(store, demo=False) == f"/data/models{os.pathsep}/scratch"
    monkeypatch.delenv("BASIN_REGISTER_ROOTS")
    assert register_roots(store, demo=False) == ""  # off unless configured
