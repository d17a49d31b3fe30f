"""``basin up``'s supervision: a worker or Redis that exits is started again after a back-off,
a worker whose heartbeat stopped is killed and started again, and each event goes to Redis.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.procs import LaunchError, spawn, stop, wait_redis
from service.resp import _keys, redis_command

logger = logging.getLogger(__name__)

#: Events kept in the Redis list of the supervisor's events (``SUPERVISOR_EVENTS_KEY``).
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
            key = _keys().SUPERVISOR_EVENTS_KEY
            redis_command(self.redis_port, "LPUSH", key, json.dumps(event))
            redis_command(self.redis_port, "LTRIM", key, "0",
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
