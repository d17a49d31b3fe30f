"""The run-state protocol in memory: :class:`MemoryRunQueue` behaves like :class:`RunQueue`.

Each method does what its Lua script does (``lua/*.lua``), under one lock instead of
Redis's single thread, with a clock the caller controls. Tests use it to check the
drive loop and the lease logic (expiry, requeue, exactly-once recording, the finish
lock) without a Redis server and without sleeping; the Redis implementation is tested
against a real server in ``tests/integration``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from basin import strict_json
from basin.status import CANCELLED, FAILED, TERMINAL
from service.runstate.queue import Ended, Lease
from service.runstate.reads import computable


@dataclass
class MemoryRun:
    """One run's state: the Redis hash, todo list, leases, done set, stream and locks."""

    info: dict[str, str]
    todo: list[int]
    leases: dict[int, float] = field(default_factory=dict)  # index → deadline
    done: set[int] = field(default_factory=set)
    stream: list[dict[str, Any]] = field(default_factory=list)
    final: tuple[str, float] | None = None  # (token, expiry)
    rescue: float | None = None  # expiry of the rescue mark
    begun: dict[int, float] = field(default_factory=dict)  # index → first lease time


class MemoryRunState:
    """Every run of one in-memory "server"; ``clock()`` gives the time (default: wall)."""

    def __init__(self, clock: Callable[[], float] = time.time):
        self.clock = clock
        self.runs: dict[str, MemoryRun] = {}
        self.lock = threading.Lock()

    def create(self, run_id: str, spec: dict[str, Any], order: Sequence[int]) -> MemoryRunQueue:
        """A queued run with ``order`` as its todo list (what the API does on create)."""
        with self.lock:
            self.runs[run_id] = MemoryRun(
                info={
                    "spec": json.dumps(spec),
                    "status": "queued",
                    "total": str(len(order)),
                    "done": "0",
                    "created": repr(self.clock()),
                    "evaluations": "0",
                    "cached": "0",
                },
                todo=list(order),
            )
        return MemoryRunQueue(self, run_id)

    def delete(self, run_id: str) -> None:
        with self.lock:
            self.runs.pop(run_id, None)


class MemoryRunQueue:
    """The :class:`service.runstate.RunQueue` interface over a :class:`MemoryRunState`."""

    def __init__(self, state: MemoryRunState, run_id: str):
        self.state = state
        self._id = run_id

    @property
    def run_id(self) -> str:
        return self._id

    def _run(self) -> MemoryRun | None:
        return self.state.runs.get(self._id)

    def _final_holder(self, run: MemoryRun, now: float) -> str | None:
        if run.final is not None and run.final[1] <= now:
            run.final = None
        return run.final[0] if run.final is not None else None

    def lease(self, seconds: float) -> Lease:
        with self.state.lock:
            now = self.state.clock()
            run = self._run()
            if run is None:
                return Lease(gone=True)
            st = run.info.get("status")
            if st in TERMINAL:
                return Lease(status=st)
            expired = sorted((d, i) for i, d in run.leases.items() if d <= now)
            for _, i in reversed(expired):  # LPUSH in reverse: the earliest ends up first
                del run.leases[i]
                if i not in run.done:
                    run.todo.insert(0, i)
                    run.info["requeued"] = str(int(run.info.get("requeued", "0")) + 1)
            idx = None
            while run.todo:
                cand = run.todo.pop(0)
                if cand not in run.done:
                    idx = cand
                    break
            if idx is None:
                first = min(run.leases.values(), default=None)
                wait = (first - now) if first is not None else 0.0
                return Lease(leases_left=len(run.leases), wait_s=max(0.0, wait))
            run.leases[idx] = now + float(seconds)
            if st == "queued":
                run.info.update(status="running", started=repr(now))
            return Lease(index=idx)

    def begin(self, index: int, reset_after_s: float = 0.0) -> bool:
        with self.state.lock:
            run = self._run()
            now = self.state.clock()
            if run is None:
                return False
            old = run.begun.get(index)
            if old is not None and not (reset_after_s > 0 and now - old > reset_after_s):
                return False
            run.begun[index] = now
            return True

    def overdue(self, limit_s: float) -> tuple[int, float] | None:
        with self.state.lock:
            run = self._run()
            if run is None:
                return None
            now = self.state.clock()
            late = sorted(((now - t, i) for i, t in run.begun.items()
                           if now - t > limit_s and i not in run.done
                           and run.leases.get(i, float("-inf")) > now), reverse=True)
            return (late[0][1], late[0][0]) if late else None

    def record(
        self, index: int, point: dict[str, Any], *, worker: str, cached: bool, eval_s: float = 0.0
    ) -> int:
        with self.state.lock:
            run = self._run()
            if run is None:
                return -1
            run.leases.pop(index, None)
            if not cached:
                run.info["evaluations"] = str(int(run.info.get("evaluations", "0")) + 1)
                run.info["eval_s"] = repr(float(run.info.get("eval_s", "0")) + float(eval_s))
            if run.info.get("status") in (CANCELLED, FAILED):
                return -2
            if index in run.done:
                return 0
            run.done.add(index)
            run.stream.append({"point": json.loads(strict_json.dumps(point)), "worker": worker,
                               "cached": cached})
            run.info["done"] = str(int(run.info.get("done", "0")) + 1)
            if cached:
                run.info["cached"] = str(int(run.info.get("cached", "0")) + 1)
            return 1

    def renew(self, index: int, seconds: float) -> bool:
        with self.state.lock:
            run = self._run()
            if run is None or index not in run.leases:
                return False
            run.leases[index] = self.state.clock() + float(seconds)
            return True

    def claim_finish(self, token: str, ttl_s: float) -> int:
        with self.state.lock:
            now = self.state.clock()
            run = self._run()
            if run is None:
                return -1
            if run.info.get("status") in TERMINAL:
                return -2
            if run.todo or run.leases:
                return -3
            if len(run.done) < int(run.info.get("total", "0")):
                return -4
            if self._final_holder(run, now) is not None:
                return 0
            run.final = (token, now + ttl_s)
            return 1

    def extend(self, indices: list[int], token: str) -> int:
        with self.state.lock:
            now = self.state.clock()
            run = self._run()
            if run is None:
                return -1
            if run.info.get("status") in TERMINAL:
                return -2
            if self._final_holder(run, now) != token:
                return 0
            run.todo.extend(int(i) for i in indices)
            run.info["total"] = str(int(run.info.get("total", "0")) + len(indices))
            run.info["waves"] = str(int(run.info.get("waves", "0")) + 1)
            run.final = None
            return 1

    def renew_finish(self, token: str, ttl_s: float) -> bool:
        with self.state.lock:
            now = self.state.clock()
            run = self._run()
            if run is None or self._final_holder(run, now) != token:
                return False
            run.final = (token, now + ttl_s)
            return True

    def end(
        self,
        status: str,
        *,
        finished: float | None = None,
        error: str | None = None,
        summary: Any = None,
        timings: Any = None,
        token: str = "",
    ) -> Ended:
        with self.state.lock:
            now = self.state.clock()
            run = self._run()
            if run is None:
                return Ended(ok=False, status="", gone=True)
            st = run.info.get("status", "")
            if st in TERMINAL:
                return Ended(ok=False, status=st)
            holder = self._final_holder(run, now)
            if status == "done":
                if holder != token:
                    return Ended(ok=False, status=holder or "")
            elif holder and holder != token:
                return Ended(ok=False, status="finishing")
            run.info.update(status=status, finished=repr(finished if finished is not None else now),
                            persist="pending")
            if error:
                run.info["error"] = error
            if summary is not None:
                run.info["summary"] = strict_json.dumps(summary)
            if timings is not None:
                run.info["timings"] = strict_json.dumps(timings)
            run.todo.clear()
            run.leases.clear()
            run.final = None
            return Ended(ok=True, status=status)

    def setup(self, anchors: Any, device: str, load_s: float = 0.0) -> bool:
        with self.state.lock:
            run = self._run()
            if run is None:
                return False
            run.info.setdefault("anchors", json.dumps(anchors))
            run.info.setdefault("device", device)
            if load_s > 0:
                run.info["load_s"] = repr(float(run.info.get("load_s", "0")) + load_s)
            return True

    def claim_rescue(
        self, *, draining: bool, ttl_s: int, idle_worker: bool = False, grace_s: float = 10.0
    ) -> bool:
        with self.state.lock:
            now = self.state.clock()
            run = self._run()
            if run is None:
                return False
            st = run.info.get("status")
            if st not in ("running", "queued"):
                return False
            if draining or self._final_holder(run, now) is not None:
                return False
            if st == "queued":
                if not idle_worker or now - float(run.info.get("created", "0")) < grace_s:
                    return False
            if any(d > now for d in run.leases.values()):
                return False
            if run.rescue is not None and run.rescue > now:
                return False
            run.rescue = now + ttl_s
            return True

    def clear_rescue(self) -> None:
        with self.state.lock:
            run = self._run()
            if run is not None:
                run.rescue = None

    def info(self) -> dict[str, str]:
        with self.state.lock:
            run = self._run()
            return dict(run.info) if run is not None else {}

    def points(self) -> list[dict[str, Any]]:
        with self.state.lock:
            run = self._run()
            pts = [dict(e["point"]) for e in run.stream] if run is not None else []
        return sorted(computable(pts), key=lambda p: p["index"])


__all__ = ["MemoryRun", "MemoryRunQueue", "MemoryRunState"]
