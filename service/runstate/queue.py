"""The atomic steps workers and the API take on a run: one Lua script each (``lua/*.lua``).

:class:`RunQueue` wraps them for one run. Two workers never lease the same index and a
point is recorded at most once: ``lease.lua`` requeues expired leases and pops the next
index not yet done; ``record.lua`` adds the index to the done set and, only if it was
new, appends the point to the stream; ``claim_finish.lua`` takes the finish lock only
when every point is recorded; ``extend.lua`` queues an adaptive run's next wave (only the lock's holder, who chose it from
every point recorded so far; it releases the lock); ``end.lua`` is the only way a run becomes ``done`` /
``failed`` / ``cancelled`` (a finisher must still hold the lock; nobody else may end a
run while a live finisher holds it); ``rescue.lua`` tells the reaper that a running run
is orphaned. :class:`service.runstate.memory.MemoryRunQueue` implements the same
protocol in Python, for unit tests of the drive loop and of the lease logic.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import redis

from basin import strict_json
from basin.status import lua_prelude
from service.runstate.keys import RunKeys
from service.runstate.reads import _s, computable, read_points

LUA_DIR = Path(__file__).with_name("lua")


@cache
def script(name: str) -> str:
    """The source of ``lua/<name>.lua``, after the status vocabulary's prelude
    (:func:`basin.status.lua_prelude`: ``QUEUED`` … ``CANCELLED``, ``TERMINAL[st]``)."""
    return lua_prelude() + (LUA_DIR / f"{name}.lua").read_text()


@dataclass(frozen=True)
class Lease:
    """What :meth:`RunQueue.lease` found: an ``index``, or why there is none."""

    index: int | None = None
    gone: bool = False  # the run was deleted
    status: str | None = None  # a terminal status when the run is over
    leases_left: int = 0  # others' live leases when the todo list is empty
    wait_s: float = 0.0  # until the earliest of those expires


@dataclass(frozen=True)
class Ended:
    """What :meth:`RunQueue.end` did: ``ok`` when this call ended the run."""

    ok: bool
    status: str  # the run's terminal status (this call's or the earlier one), or why not
    gone: bool = False


class RunQueue:
    """One run's atomic steps (Lua scripts): lease, record, renew, finish lock, end, rescue."""

    def __init__(self, client: redis.Redis, run_id: str):
        self.r = client
        self.keys = RunKeys(run_id)
        self._lease = client.register_script(script("lease"))
        self._record = client.register_script(script("record"))
        self._renew = client.register_script(script("renew"))
        self._claim = client.register_script(script("claim_finish"))
        self._renew_finish = client.register_script(script("renew_finish"))
        self._end = client.register_script(script("end"))
        self._rescue = client.register_script(script("rescue"))
        self._setup = client.register_script(script("setup"))
        self._begin = client.register_script(script("begin"))
        self._extend = client.register_script(script("extend"))

    @property
    def run_id(self) -> str:
        return self.keys.id

    def clear_rescue(self) -> None:
        """A task of this run is running: a later orphan may be rescued again."""
        self.r.delete(self.keys.rescue)

    def info(self) -> dict[str, str]:
        """The run's hash (``{}`` when the run is gone)."""
        return {_s(a): _s(b) for a, b in self.r.hgetall(self.keys.run).items()}

    def points(self) -> list[dict[str, Any]]:
        """Every recorded point, sorted by index."""
        pts, _ = read_points(self.r, self.keys.id)
        return sorted(computable(pts), key=lambda p: p["index"])

    def lease(self, seconds: float) -> Lease:
        """Requeue expired leases, then pop the next index and lease it for ``seconds``."""
        k = self.keys
        out = self._lease(keys=[k.run, k.todo, k.leases, k.done], args=[seconds])
        code = int(out[0])
        if code >= 0:
            return Lease(index=code)
        if code == -1:
            return Lease(gone=True)
        if code == -2:
            return Lease(status=_s(out[1]))
        return Lease(leases_left=int(out[1]), wait_s=max(0.0, int(out[2]) / 1000))

    def record(
        self, index: int, point: dict[str, Any], *, worker: str, cached: bool, eval_s: float = 0.0
    ) -> int:
        """Record a point once: 1 new, 0 duplicate, -1 run gone, -2 run cancelled/failed.

        Also counts the evaluation (``evaluations``, ``eval_s``) unless ``cached``.
        """
        k = self.keys
        return int(
            self._record(
                keys=[k.run, k.done, k.points, k.leases],
                args=[
                    index,
                    strict_json.dumps(point),  # a diverged metric (inf, nan) → null
                    worker,
                    "1" if cached else "0",
                    repr(float(eval_s)),
                ],
            )
        )

    def renew(self, index: int, seconds: float) -> bool:
        """Extend this worker's lease on ``index`` (False when it no longer exists)."""
        return bool(self._renew(keys=[self.keys.leases], args=[index, seconds]))

    def begin(self, index: int, reset_after_s: float = 0.0) -> bool:
        """Note when ``index`` was first leased: kept across requeues, unless older than
        ``reset_after_s`` (0 = never reset; see ``lua/begin.lua``)."""
        return bool(self._begin(keys=[self.keys.run, self.keys.begun],
                                args=[index, repr(float(reset_after_s))]))

    def overdue(self, limit_s: float) -> tuple[int, float] | None:
        """A point first leased more than ``limit_s`` seconds ago (server time), leased
        right now and not yet recorded: ``(index, seconds)``, the longest such; ``None``
        when there is none. (A point nobody holds is not running, so not over time.)"""
        k = self.keys
        begun = {int(_s(i)): float(_s(t)) for i, t in self.r.hgetall(k.begun).items()}
        if not begun:
            return None
        sec, usec = self.r.time()
        now = float(sec) + float(usec) / 1e6
        late = sorted(((now - t, i) for i, t in begun.items() if now - t > limit_s), reverse=True)
        for age, i in late:
            deadline = self.r.zscore(k.leases, str(i))
            if deadline is not None and deadline > now and not self.r.sismember(k.done, str(i)):
                return i, age
        return None

    def claim_finish(self, token: str, ttl_s: float) -> int:
        """Take the finish lock for ``ttl_s`` seconds: 1 taken, 0 held by another finisher,
        negative when there is nothing to finish (see ``lua/claim_finish.lua``)."""
        k = self.keys
        return int(
            self._claim(
                keys=[k.run, k.todo, k.leases, k.done, k.final],
                args=[token, max(1, int(ttl_s * 1000))],
            )
        )

    def extend(self, indices: list[int], token: str) -> int:
        """Queue the next wave of an adaptive run (``indices``) and release the finish lock
        ``token`` holds: 1 queued, 0 the lock is not ``token``'s, -1 run gone, -2 run ended
        (see ``lua/extend.lua``)."""
        k = self.keys
        return int(self._extend(keys=[k.run, k.todo, k.final], args=[token, *indices]))

    def renew_finish(self, token: str, ttl_s: float) -> bool:
        """Extend the finish lock while ``token`` holds it (False when it was lost)."""
        return bool(
            self._renew_finish(keys=[self.keys.final], args=[token, max(1, int(ttl_s * 1000))])
        )

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
        """Move the run to ``status`` (``done``, ``failed``, ``cancelled``) unless it already
        ended, it was deleted, or a live finisher other than ``token`` holds the lock
        (``done`` requires holding it). Marks the run ``persist: pending``."""
        k = self.keys
        out = self._end(
            keys=[k.run, k.todo, k.leases, k.final],
            args=[
                status,
                repr(float(finished if finished is not None else time.time())),
                error or "",
                "" if summary is None else strict_json.dumps(summary),
                "" if timings is None else strict_json.dumps(timings),
                token,
            ],
        )
        code, what = int(out[0]), _s(out[1])
        return Ended(ok=code == 1, status=what, gone=code == -1)

    def setup(self, anchors: Any, device: str, load_s: float = 0.0) -> bool:
        """Note the anchors and device (first writer wins) and add the load time, only
        while the run exists; False when it was deleted."""
        return bool(
            self._setup(
                keys=[self.keys.run], args=[json.dumps(anchors), device, repr(float(load_s))]
            )
        )

    def claim_rescue(
        self, *, draining: bool, ttl_s: int, idle_worker: bool = False, grace_s: float = 10.0
    ) -> bool:
        """True when the run needs a new drain task, and no rescue task is pending.

        A ``running`` run is orphaned when no live worker drains it (``draining``), no
        lease is live and nobody is finishing it. A ``queued`` run lost its tasks when it
        is older than ``grace_s``, nobody drains it and some worker is idle
        (``idle_worker``). One pending rescue is remembered for ``ttl_s`` or until a
        worker takes a task of the run (``rescue.lua``).
        """
        k = self.keys
        return bool(
            self._rescue(
                keys=[k.run, k.leases, k.final, k.rescue],
                args=[
                    "1" if draining else "0",
                    max(1, int(ttl_s)),
                    "1" if idle_worker else "0",
                    repr(float(grace_s)),
                ],
            )
        )
