"""The real Basin stack for tests: redis-server + Celery worker(s) + uvicorn, as subprocesses.

::

    with running_stack(tmp_path / "store", workers=2, lease_seconds=3) as stack:
        httpx.get(stack.base_url + "/api/health")
        stack.kill_worker(0)        # SIGKILL, like a crashed machine
        stack.start_worker()
        stack.flush_redis()

Everything binds 127.0.0.1 on free ports, runs with one torch thread and
``HF_HUB_OFFLINE=1``, logs to ``<store>/../stack-logs/`` and is stopped by PID
(process groups) on exit. Uses the same process helpers as ``basin up``
(:mod:`service.launch`).
"""

from __future__ import annotations

import contextlib
import json
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

    def wait_stored(self, run_id: str, *, timeout: float = 60.0) -> dict:
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
        timeout: float = 120.0,
        until: tuple[str, ...] = ("done", "failed", "cancelled"),
    ) -> dict:
        """Poll ``GET /api/runs/{id}`` until its status is one of ``until``; returns the body."""
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
) -> Iterator[Stack]:
    """Start the real stack over ``store``; yields a :class:`Stack`; stops everything on exit."""
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    logs = store.parent / f"{store.name}-stack-logs"
    redis_port, api_port = launcher.free_port(), launcher.free_port()
    redis_proc = launcher.spawn(
        launcher.redis_argv(redis_port), env={"PATH": "/usr/bin:/bin"}, log=logs / "redis.log"
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
        for p in reversed(procs):  # the API, then Redis
            launcher.stop(p, timeout=10)
