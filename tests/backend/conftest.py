"""Backend fixtures: the real FastAPI app over a fresh store folder, driven by ``TestClient``.

The registry routes need no Redis (the app's client connects lazily), so none is
started here. Archives of the tiny real checkpoints are built in memory per test.
"""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from backend.app.main import create_app
from service import launch
from service.settings import Settings

TOKEN = "s3cret-token"


def zip_dir(directory: Path, prefix: str = "") -> bytes:
    """A zip of a model directory's files (optionally under a ``prefix/`` folder)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(directory.iterdir()):
            if p.is_file():
                zf.write(p, prefix + p.name)
    return buf.getvalue()


def targz_dir(directory: Path, prefix: str = "") -> bytes:
    """A .tar.gz of a model directory's files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for p in sorted(directory.iterdir()):
            if p.is_file():
                tf.add(p, arcname=prefix + p.name)
    return buf.getvalue()


def store_state(root: Path) -> dict[str, list[str]]:
    """What the store holds: entries of checkpoints/, datasets/ and tmp/ (sorted)."""
    return {
        sub: sorted(p.name for p in (root / sub).iterdir()) if (root / sub).exists() else []
        for sub in ("checkpoints", "datasets", "tmp")
    }


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[int]:
    """Run ``app`` under a real uvicorn server on a free 127.0.0.1 port (in a thread)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def file_sizes(folder: Path) -> list[int]:
    """Sizes of the files under ``folder`` now, for polling a store's ``tmp/`` while the server
    works in it: a workspace renamed (``.new-*`` → ``ws-*``) or removed between listing and
    reading is skipped, not an error."""
    out: list[int] = []
    try:
        for p in folder.rglob("*"):
            try:
                if p.is_file():
                    out.append(p.stat().st_size)
            except FileNotFoundError:
                continue
    except FileNotFoundError:  # a folder vanished while it was walked: what was seen so far
        pass
    return out


def wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Poll ``predicate`` until true or ``timeout`` seconds pass; returns its last value.

    ``timeout`` is a hang limit (CI is a busy 2-core machine): no caller expects it to pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def make_client(tmp_path) -> Callable[..., TestClient]:
    """Build a client over a fresh app; keyword arguments override :class:`Settings`."""
    clients: list[TestClient] = []

    def make(**overrides) -> TestClient:
        values = {
            "api_token": None,
            "redis_url": "redis://127.0.0.1:1/0",
            "allowed_hosts": "testserver",  # TestClient's Host
            **overrides,
        }
        settings = Settings(store=tmp_path / "store", **values)
        # The header the dashboard and the CLI send on writes (any value when no token is
        # set; the CSRF guard refuses form-like writes without it). Tests of the guard drop it.
        client = TestClient(create_app(settings, with_ui=False), headers={"X-Basin-Token": ""})
        client.store_root = settings.store  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.close()


@pytest.fixture
def reg_client(make_client, tmp_path_factory) -> TestClient:
    """A client whose server may register folders under pytest's temporary root
    (``BASIN_REGISTER_ROOTS``), where the tiny checkpoints are built."""
    return make_client(register_roots=[tmp_path_factory.getbasetemp()])


@pytest.fixture
def client(make_client) -> TestClient:
    """A client over an app with default settings (no token) and an empty store."""
    return make_client()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """A private, in-memory redis-server on a free loopback port (for routes that read runs)."""
    port = launch.free_port()
    logs = tmp_path_factory.mktemp("redis")
    argv = [launch.redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no"]
    with open(logs / "redis.log", "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=logs)
    try:
        launch.wait_redis(port, proc=proc)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
