"""The real Basin stack for tests: redis-server + Celery worker(s) + uvicorn, as subprocesses.

::

    with running_stack(tmp_path / "store", workers=2, lease_seconds=3) as stack:
        httpx.get(stack.base_url + "/api/health")
        stack.kill_worker(0)        # SIGKILL, like a crashed machine
        stack.start_worker()
        stack.flush_redis()

With ``seam=<dir>`` the workers call :func:`seam_hook` at each point, finish and document
write (``BASIN_WORKER_HOOK``), so a test holds a worker at an exact moment and kills it
there (:class:`Seam`) instead of racing a clock. With ``redis_dir=<dir>`` Redis keeps its
data in an append-only file there and :meth:`Stack.restart_redis` brings it back with it.

Everything binds 127.0.0.1 on free ports, runs with one torch thread and
``HF_HUB_OFFLINE=1``, logs to ``<store>/../stack-logs/`` and is stopped by PID
(process groups) on exit. Uses the same process helpers as ``basin up``
(:mod:`service.launch`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import launch as launcher


@dataclass
class Stack:
    """Handles on a running stack. ``workers[i]`` is ``None`` once killed."""

    base_url: str
    redis_url: str
    store: Path
    token: str | None
    logs: Path
    env: dict[str, str]
    redis_proc: subprocess.Popen
    api_proc: subprocess.Popen
    workers: list[subprocess.Popen | None] = field(default_factory=list)
    worker_names: list[str] = field(default_factory=list)
    seam: Seam | None = None
    redis_dir: Path | None = None
    api_ui: bool = True
    restarts: dict[str, int] = field(default_factory=lambda: {"redis": 0, "api": 0})

    @property
    def live_worker_names(self) -> list[str]:
        """Names of the workers started and not killed."""
        return [n for n, p in zip(self.worker_names, self.workers, strict=True) if p is not None]

    @property
    def headers(self) -> dict[str, str]:
        """Headers for write requests: the token, or an empty ``X-Basin-Token`` (the API's
        CSRF guard refuses body-less and form writes without the header)."""
        return {"X-Basin-Token": self.token or ""}

    def start_worker(self, *, wait: bool = True, env: dict[str, str] | None = None) -> int:
        """Start one more Celery worker; returns its index. Waits until health lists it.

        ``env`` overrides the stack's environment for this worker only (e.g. its own
        ``BASIN_STORE`` and ``BASIN_API_URL``: a worker on another machine)."""
        i = len(self.workers)
        name = f"w{i}@basin-test"
        proc = launcher.spawn(
            launcher.worker_argv(name, loglevel="INFO"),
            env={**self.env, **(env or {})},
            log=self.logs / f"worker{i}.log",
        )
        self.workers.append(proc)
        self.worker_names.append(name)
        if wait:
            launcher.wait_healthy(
                self.base_url,
                timeout=90,
                procs=[proc],
                check=lambda h: name in {w.get("name") for w in h.get("workers", [])},
            )
        return i

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker ``i`` (no cleanup runs: its leases must expire)."""
        proc = self.workers[i]
        if proc is None:
            return
        launcher.stop(proc, sig=signal.SIGKILL, timeout=5)
        self.workers[i] = None

    def redis(self):
        """A redis-py client on the stack's Redis (decode_responses=True)."""
        import redis

        return redis.Redis.from_url(self.redis_url, decode_responses=True, socket_timeout=30)

    def flush_redis(self) -> None:
        """Drop everything in Redis (runs must still be served from the store)."""
        self.redis().flushall()

    def purge_tasks(self, queue: str = "basin") -> int:
        """Drop the Celery tasks waiting in ``queue`` (as if every task had been consumed by
        workers that then died); returns how many were dropped."""
        r = self.redis()
        keys = [queue, *r.scan_iter(match=queue + "\x06\x16*")]
        n = sum(r.llen(k) for k in keys)
        r.delete(*keys)
        return n

    def stop_redis(self) -> None:
        """Stop the stack's Redis (SIGTERM, by PID): the API must answer 503, not hang."""
        launcher.stop(self.redis_proc, timeout=10)

    @property
    def redis_port(self) -> int:
        return int(self.redis_url.rsplit(":", 1)[1].split("/", 1)[0])

    @property
    def api_port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def worker_index(self, name: str) -> int:
        """The index (for :meth:`kill_worker`) of the worker called ``name``."""
        return self.worker_names.index(name)

    def restart_redis(self) -> None:
        """Stop Redis (SIGTERM: it writes its append-only file) and start it again on the
        same port over the same data directory; waits until it answers."""
        launcher.stop(self.redis_proc, timeout=20)
        self.redis_proc = launcher.spawn(
            redis_argv(self.redis_port, self.redis_dir),
            env={"PATH": "/usr/bin:/bin"},
            log=self.logs / f"redis-{self.restarts['redis'] + 1}.log",
        )
        launcher.wait_redis(self.redis_port, proc=self.redis_proc, timeout=60)
        self.restarts["redis"] += 1

    def restart_api(self) -> None:
        """Stop the API (SIGTERM) and start it again on the same port; waits until healthy."""
        launcher.stop(self.api_proc, timeout=20)
        self.api_proc = launcher.spawn(
            launcher.api_argv(self.api_port, ui=self.api_ui),
            env=self.env,
            log=self.logs / f"api-{self.restarts['api'] + 1}.log",
        )
        launcher.wait_healthy(self.base_url, timeout=120, workers=0, procs=[self.api_proc])
        self.restarts["api"] += 1

    def log(self, name: str) -> str:
        """The tail of one process log (``api``, ``redis``, ``worker0``...), for failure messages."""
        p = self.logs / f"{name}.log"
        return p.read_text(errors="replace")[-4000:] if p.exists() else ""

    def request(self, method: str, path: str, **kw: Any):
        """An ``httpx`` request against the stack (write headers added)."""
        import httpx

        headers = {**self.headers, **kw.pop("headers", {})}
        return httpx.request(
            method, self.base_url + path, headers=headers, timeout=kw.pop("timeout", 60), **kw
        )

    def wait_stored(self, run_id: str, *, timeout: float = 300.0) -> dict:
        """Wait for an ended run's result document in the store (its writer stores it just
        after ending the run, or the reaper does); returns the document."""
        path = self.store / "runs" / f"{run_id}.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                try:
                    return json.loads(path.read_text())
                except ValueError:  # caught between the write and the rename: try again
                    pass
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} was not stored within {timeout:.0f} s")

    def wait_run(
        self,
        run_id: str,
        *,
        timeout: float = 300.0,
        until: tuple[str, ...] = ("done", "failed", "cancelled"),
    ) -> dict:
        """Poll ``GET /api/runs/{id}`` until its status is one of ``until``; returns the body.

        ``timeout`` is a hang limit, not a speed limit: the poll returns on the event, and CI is
        a busy 2-core machine."""
        deadline = time.monotonic() + timeout
        body: Any = None
        while time.monotonic() < deadline:
            r = self.request("GET", f"/api/runs/{run_id}")
            body = r.json()
            if r.status_code == 200 and body.get("status") in until:
                return body
            time.sleep(0.2)
        raise TimeoutError(
            f"run {run_id} not {until} after {timeout} s: {json.dumps(body)[:500]}"
            f"\n--- worker0 log ---\n{self.log('worker0')}"
        )


@contextlib.contextmanager
def running_stack(
    store: Path,
    *,
    workers: int = 1,
    token: str | None = None,
    lease_seconds: int = 5,
    ui: bool = True,
    env: dict[str, str] | None = None,
    seam: Path | None = None,
    redis_dir: Path | None = None,
) -> Iterator[Stack]:
    """Start the real stack over ``store``; yields a :class:`Stack`; stops everything on exit.

    ``seam``: a folder for :class:`Seam` (the workers get the hook). ``redis_dir``: Redis
    keeps an append-only file there (survives :meth:`Stack.restart_redis`)."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    logs = store.parent / f"{store.name}-stack-logs"
    redis_port, api_port = launcher.free_port(), launcher.free_port()
    redis_proc = launcher.spawn(
        redis_argv(redis_port, redis_dir), env={"PATH": "/usr/bin:/bin"}, log=logs / "redis.log"
    )
    procs: list[subprocess.Popen] = [redis_proc]
    stack: Stack | None = None
    try:
        launcher.wait_redis(redis_port, proc=redis_proc)
        redis_url = f"redis://127.0.0.1:{redis_port}/0"
        extra = {
            "BASIN_LEASE_SECONDS": str(lease_seconds),
            "BASIN_WORKER_DEVICE": "cpu",
            "BASIN_TORCH_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "BASIN_API_TOKEN": token or "",
            "BASIN_PUBLIC_URL": "",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            # tests register folders from pytest's temporary root (``<base>/<dir>/store``)
            "BASIN_REGISTER_ROOTS": str(store.resolve().parent.parent),
        }
        if seam is not None:
            Path(seam).mkdir(parents=True, exist_ok=True)
            extra["BASIN_WORKER_HOOK"] = "tests.stack:seam_hook"
            extra["BASIN_SEAM_DIR"] = str(Path(seam).resolve())
        extra.update(env or {})
        full_env = launcher.service_env(redis_url=redis_url, store=store, extra=extra)
        if not token:
            full_env.pop("BASIN_API_TOKEN", None)
        api_proc = launcher.spawn(
            launcher.api_argv(api_port, ui=ui), env=full_env, log=logs / "api.log"
        )
        procs.append(api_proc)
        stack = Stack(
            base_url=f"http://127.0.0.1:{api_port}",
            redis_url=redis_url,
            store=store,
            token=token,
            logs=logs,
            env=full_env,
            redis_proc=redis_proc,
            api_proc=api_proc,
            seam=Seam(Path(seam)) if seam is not None else None,
            redis_dir=Path(redis_dir) if redis_dir is not None else None,
            api_ui=ui,
        )
        for _ in range(workers):
            stack.start_worker(wait=False)
        try:
            launcher.wait_healthy(
                stack.base_url,
                timeout=120,
                workers=workers,
                procs=[api_proc, *[w for w in stack.workers if w]],
            )
        except launcher.LaunchError as e:
            tails = "\n".join(f"--- {n} ---\n{stack.log(n)}" for n in ("api", "worker0"))
            raise launcher.LaunchError(f"{e}\n{tails}") from None
        yield stack
    finally:
        for w in stack.workers if stack is not None else []:
            if w is not None:
                launcher.stop(w, timeout=10)
        if stack is not None:  # the current API and Redis (restarts replace them)
            procs = [stack.redis_proc, stack.api_proc]
        for p in reversed(procs):  # the API, then Redis
            launcher.stop(p, timeout=10)


def start_basin_up(port: int, store: Path, env: dict[str, str], log: Path) -> subprocess.Popen:
    """``basin up --port PORT --store STORE`` in its own session (so a test can signal the whole
    group), its output in ``log``; the caller waits for health and stops it."""
    import sys

    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "basin"), "up", "--port", str(port), "--store", str(store)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def redis_argv(port: int, data_dir: Path | None = None) -> list[str]:
    """Redis as ``basin up`` starts it; with ``data_dir``, persistent: an append-only file
    there, fsynced on every write (a restart keeps every recorded point)."""
    argv = launcher.redis_argv(port)
    if data_dir is None:
        return argv
    Path(data_dir).mkdir(parents=True, exist_ok=True)
    i = argv.index("--appendonly")
    argv[i + 1] = "yes"
    return [*argv, "--appendfsync", "always", "--dir", str(Path(data_dir).resolve())]


# ---- the seam: hold a worker at an exact moment ------------------------------------------

POLL_S = 0.02


def seam_hook(event: str, run_id: str, index: int | None, worker: str) -> None:
    """The worker hook (``BASIN_WORKER_HOOK=tests.stack:seam_hook``), run inside a worker.

    Appends the worker's name to ``<BASIN_SEAM_DIR>/<run>-<tag>.started`` (``tag``: the point
    index, or ``finish`` / ``persist``), then blocks while a hold file matches
    (``hold-<run>-<tag>``, ``hold-<run>``, ``hold-any-<tag>``, ``hold-all``) and no release
    file does (``release-<run>-<tag>``, ``release-<run>``, ``release-all``). ``hold-worker-<name>``
    (every moment) and ``hold-worker-<name>-<tag>`` hold one worker only (:meth:`Seam.hold_worker`)."""
    d = Path(os.environ["BASIN_SEAM_DIR"])
    tag = event if index is None else str(index)
    with open(d / f"{run_id}-{tag}.started", "a") as f:
        f.write(worker + "\n")
    holds = [f"hold-{run_id}-{tag}", f"hold-{run_id}", f"hold-any-{tag}", "hold-all",
             f"hold-worker-{worker}", f"hold-worker-{worker}-{tag}"]  # one worker (netns test)
    releases = [f"release-{run_id}-{tag}", f"release-{run_id}", "release-all"]
    while any((d / h).exists() for h in holds) and not any((d / r).exists() for r in releases):
        time.sleep(POLL_S)


@dataclass
class Seam:
    """The test side of :func:`seam_hook`: arm holds, wait for a worker to arrive, release."""

    dir: Path

    def hold(self, run: str = "any", tag: str | int | None = None) -> Path:
        """Hold workers that reach ``tag`` (a point index, ``finish``, ``persist``; ``None``:
        every moment) of ``run`` (``any``: every run). Returns the hold file."""
        if run == "any" and tag is None:
            name = "hold-all"
        elif tag is None:
            name = f"hold-{run}"
        else:
            name = f"hold-{run}-{tag}"
        p = self.dir / name
        p.touch()
        return p

    def hold_worker(self, worker: str, tag: str | int | None = None) -> Path:
        """Hold the worker called ``worker`` only: at every moment, or at ``tag`` of any run.
        Let it go with :meth:`unhold` (the release files would let other workers go too)."""
        p = self.dir / (f"hold-worker-{worker}" + ("" if tag is None else f"-{tag}"))
        p.touch()
        return p

    def release(self, run: str | None = None, tag: str | int | None = None) -> None:
        """Let held workers go: of ``run`` (at ``tag``), or every one (``run=None``)."""
        name = "release-all" if run is None else f"release-{run}" + ("" if tag is None else f"-{tag}")
        (self.dir / name).touch()

    def unhold(self, *paths: Path) -> None:
        for p in paths:
            p.unlink(missing_ok=True)

    def arrived(self, run: str, tag: str | int | None = None) -> list[tuple[str, str]]:
        """``(tag, worker)`` for every time a worker reached a moment of ``run`` so far."""
        pattern = f"{run}-{'*' if tag is None else tag}.started"
        out = []
        for p in sorted(self.dir.glob(pattern)):
            t = p.name[len(run) + 1 : -len(".started")]
            out += [(t, w) for w in p.read_text().split()]
        return out

    def wait(self, stack: Stack, run: str, tag: str | int | None = None, *,
             limit: float = 600.0) -> tuple[str, str]:
        """Block until a worker reaches ``tag`` of ``run``; returns ``(tag, worker)``.

        An event, not a deadline: ``limit`` only stops a test whose workers all died or
        never got the task from hanging forever (it reports their logs)."""
        end = time.monotonic() + limit
        while True:
            got = self.arrived(run, tag)
            if got:
                return got[0]
            if time.monotonic() > end or not any(
                w is not None and w.poll() is None for w in stack.workers
            ):
                logs = "\n".join(f"--- {n} ---\n{stack.log(n)}" for n in ("api", "worker0"))
                raise AssertionError(f"no worker reached {run} {tag} (workers alive: "
                                     f"{stack.live_worker_names})\n{logs}")
            time.sleep(POLL_S)
