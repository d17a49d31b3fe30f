"""The one evaluation loop: take a point, reuse or evaluate it, hand the result on.

The CLI and the workers run the same loop; only where points come from and where
results go differ::

    CLI:    drive(land, ListSource(land.points()), ListSink(on_point), progress=bar)
    worker: drive(land, LeaseSource(queue, ...), StreamSink(queue, ...), cache=RedisPointCache)

A :class:`PointSource` hands out points until it has none left for this driver (the
list is exhausted; or, for a worker, the run is finished, cancelled or deleted). A
:class:`Sink` takes each result and may answer ``False`` to stop the loop (the run
ended under it). A :class:`PointCache` maps :meth:`basin.engine.Landscape.point_key`
to metrics, so identical points are never computed twice, across runs too.

Nothing here knows about Redis, Celery or HTTP: the services implement the three
interfaces (``service/runstate/sources.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from basin.errors import BasinError
from basin.results import point_record

logger = logging.getLogger(__name__)


class Stopped(Exception):
    """Raised between two batches of a point when ``should_stop()`` said so (cancel);
    :func:`drive` gives the point back and returns ``stopped="cancelled"``."""


class PointTimeLimit(BasinError):
    """A point took longer than the per-point time limit (its run fails with this)."""

    def __init__(self, index: int, limit_s: float):
        super().__init__(
            f"point {index} exceeded the per-point time limit of {limit_s:g} s "
            "(raise BASIN_POINT_TIME_LIMIT_S, or make the run smaller: fewer examples, "
            "a shorter max_length)"
        )
        self.index, self.limit_s = index, limit_s


#: The check the evaluator calls between batches (set by :func:`drive` around a point).
_BETWEEN_BATCHES: contextvars.ContextVar[Callable[[], None] | None] = contextvars.ContextVar(
    "basin_between_batches", default=None
)


def between_batches() -> None:
    """Called by :class:`basin.evaluate.base.Evaluator` between batches of a point: raises
    :class:`Stopped` (cancel) or :class:`PointTimeLimit` when the driver says so."""
    check = _BETWEEN_BATCHES.get()
    if check is not None:
        check()


@contextlib.contextmanager
def _checking(check: Callable[[], None]) -> Iterator[None]:
    token = _BETWEEN_BATCHES.set(check)
    try:
        yield
    finally:
        _BETWEEN_BATCHES.reset(token)


class Evaluable(Protocol):
    """What the loop needs of a landscape (:class:`basin.engine.Landscape` is one).

    ``measure(point)`` → ``{"metrics": {...}, ...}``: the point's record without its index
    and coordinates (``intervals``; ``ensemble``, ``examples``, ``samples`` when the run has
    them); JSON-ready.
    """

    def measure(self, point: Any) -> dict[str, Any]: ...

    def point_key(self, point: Any) -> str: ...


class PointSource(Protocol):
    """Where points come from: ``next()`` → a point, or ``None`` when there are no more.

    A source may also have ``take(n)`` → up to ``n`` points (``[]``: no more), which
    :func:`drive` uses for several points per forward pass; every source here has it."""

    def next(self) -> Any | None: ...

    def release(self, point: Any) -> None:
        """The point was taken but not finished (the loop stopped); give it back if it can."""
        ...


#: What a sink did with a result: kept it, had it already (another worker recorded that
#: point first), or refused it because the run ended (the loop stops).
Outcome = Literal["new", "duplicate", "ended"]


class Sink(Protocol):
    """Where results go; ``put`` says what became of the result (:data:`Outcome`)."""

    def put(self, record: dict[str, Any], *, cached: bool, eval_s: float) -> Outcome: ...


class PointCache(Protocol):
    """Measured points (:meth:`Evaluable.measure`'s dicts) by point key; ``get`` returns ``None`` on a miss."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def set(self, key: str, measured: dict[str, Any]) -> None: ...


@dataclass
class DriveStats:
    """What one :func:`drive` call did."""

    evaluated: int = 0  # points computed on the live model
    reused: int = 0  # points answered from the cache
    refused: int = 0  # results the sink did not take as new (duplicates)
    eval_s: float = 0.0  # seconds spent evaluating
    stopped: str = "exhausted"  # "exhausted" | "cancelled" | "ended"
    interrupted: int | None = None  # the point a cancel stopped between two of its batches


def drive(
    land: Evaluable,
    source: PointSource,
    sink: Sink,
    *,
    cache: PointCache | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_progress: Callable[[dict[str, Any], bool], None] | None = None,
    point_time_limit_s: float | None = None,
) -> DriveStats:
    """Evaluate points from ``source`` into ``sink`` until one of them says stop.

    For each point: ``should_stop()`` (cancel) → cache lookup by point key → otherwise
    :meth:`Landscape.evaluate` (weights mixed in place, forward passes) and the cache is
    filled → ``sink.put({index, coords, metrics, intervals?, ensemble?, examples?, samples?})``. ``on_progress(record, cached)`` is
    called after each accepted point (progress bars). Exceptions propagate: the caller
    decides whether a failure fails the run.

    Within a point, the evaluator calls :func:`between_batches` after each batch: it asks
    ``should_stop()`` again (a cancel stops within the point: the point is given back
    and ``stopped`` is ``"cancelled"``) and raises :class:`PointTimeLimit` once the point
    has taken longer than ``point_time_limit_s`` (``None``/0: no limit).

    When ``land.points_per_pass`` is above 1 and the source has ``take(n)``, points go ``k`` at a
    time through ``land.measure_many`` (one vmapped forward pass per batch for the group,
    :mod:`basin.evaluate.multi`); the results reach the sink one by one in the order taken.
    """
    stats = DriveStats()
    width = int(getattr(land, "points_per_pass", 1) or 1)
    take = getattr(source, "take", None)
    if width > 1 and take is not None and hasattr(land, "measure_many"):
        return _drive_many(land, source, sink, stats, width, take, cache=cache, should_stop=should_stop,
                           on_progress=on_progress, point_time_limit_s=point_time_limit_s)
    while True:
        if should_stop is not None and should_stop():
            stats.stopped = "cancelled"
            return stats
        point = source.next()
        if point is None:
            return stats
        try:
            key = land.point_key(point) if cache is not None else None
            measured = cache.get(key) if cache is not None and key is not None else None
            cached = measured is not None
            dt = 0.0
            if measured is None:
                t0 = time.perf_counter()
                with _checking(_point_check(point.index, t0, should_stop, point_time_limit_s)):
                    measured = land.measure(point)
                dt = time.perf_counter() - t0
                stats.eval_s += dt
                if cache is not None and key is not None:
                    cache.set(key, measured)
        except Stopped:
            source.release(point)
            stats.stopped, stats.interrupted = "cancelled", point.index
            return stats
        except BaseException:
            source.release(point)
            raise
        if not _hand_on(sink, stats, point, measured, cached, dt, on_progress):
            return stats


def _hand_on(sink: Sink, stats: DriveStats, point: Any, measured: dict[str, Any], cached: bool, dt: float,
             on_progress: Callable[[dict[str, Any], bool], None] | None) -> bool:
    """Give one result to the sink; ``False`` when the loop must stop (the run ended)."""
    record = point_record(point.index, point.coords, measured)  # the one builder
    outcome = sink.put(record, cached=cached, eval_s=dt)
    if outcome == "ended":
        stats.stopped = "ended"
        return False
    if outcome == "duplicate":
        stats.refused += 1
        return True
    if cached:
        stats.reused += 1
    else:
        stats.evaluated += 1
    if on_progress is not None:
        on_progress(record, cached)
    return True


def _drive_many(
    land: Any,
    source: PointSource,
    sink: Sink,
    stats: DriveStats,
    width: int,
    take: Callable[[int], list[Any]],
    *,
    cache: PointCache | None,
    should_stop: Callable[[], bool] | None,
    on_progress: Callable[[dict[str, Any], bool], None] | None,
    point_time_limit_s: float | None,
) -> DriveStats:
    """:func:`drive` with ``width`` points per forward pass (``land.measure_many``): the source's
    ``take(n)`` hands out up to ``n`` points (never past a wave), cached ones are reused, the rest
    measured together; results go to the sink in the order taken. A group may take ``len(group)``
    times the per-point time limit; a cancel gives every point of the group back."""
    while True:
        if should_stop is not None and should_stop():
            stats.stopped = "cancelled"
            return stats
        group = list(take(width))
        if not group:
            return stats
        try:
            keys: list[str | None] = [land.point_key(p) for p in group] if cache is not None else [None] * len(group)
            measured: list[dict[str, Any] | None] = [
                cache.get(k) if cache is not None and k is not None else None for k in keys]
            cached = [m is not None for m in measured]
            todo = [i for i, m in enumerate(measured) if m is None]
            dt = 0.0
            if todo:
                t0 = time.perf_counter()
                limit = point_time_limit_s * len(todo) if point_time_limit_s else None
                with _checking(_point_check(group[todo[0]].index, t0, should_stop, limit)):
                    got = land.measure_many([group[i] for i in todo])
                dt = (time.perf_counter() - t0) / len(todo)
                stats.eval_s += dt * len(todo)
                for i, m in zip(todo, got, strict=True):
                    measured[i] = m
                    key = keys[i]
                    if cache is not None and key is not None:
                        cache.set(key, m)
        except Stopped:
            for p in reversed(group):
                source.release(p)
            stats.stopped, stats.interrupted = "cancelled", group[0].index
            return stats
        except BaseException:
            for p in reversed(group):
                source.release(p)
            raise
        for n, (p, m) in enumerate(zip(group, measured, strict=True)):
            assert m is not None
            if not _hand_on(sink, stats, p, m, cached[n], 0.0 if cached[n] else dt, on_progress):
                for rest in reversed(group[n + 1 :]):
                    source.release(rest)
                return stats


def _point_check(
    index: int, t0: float, should_stop: Callable[[], bool] | None, limit_s: float | None
) -> Callable[[], None]:
    def check() -> None:
        if limit_s and time.perf_counter() - t0 > limit_s:
            raise PointTimeLimit(index, limit_s)
        if should_stop is not None and should_stop():
            raise Stopped(f"point {index} stopped")

    return check


# ---- the in-process implementations (the CLI's) ------------------------------------------


class ListSource:
    """Points from a list, in order (the CLI passes ``Landscape.points()``, coarse → fine)."""

    def __init__(self, points: Iterable[Any]):
        self._it: Iterator[Any] = iter(points)

    def next(self) -> Any | None:
        return next(self._it, None)

    def take(self, n: int) -> list[Any]:
        """Up to ``n`` next points (several per forward pass)."""
        return list(itertools.islice(self._it, n))

    def release(self, point: Any) -> None:
        return None


class WaveSource:
    """Points wave by wave (adaptive refinement, :mod:`basin.refine`): ``choose()`` gives the
    next wave's indices once the previous wave is used up — in one process the loop has
    handed every result of that wave to its sink by then, so ``choose`` sees them all —
    and ``[]`` when the run is complete; ``point(index)`` makes each point."""

    def __init__(self, point: Callable[[int], Any], choose: Callable[[], list[int]]):
        self.point, self.choose = point, choose
        self._wave: list[int] = []

    def next(self) -> Any | None:
        if not self._wave:
            self._wave = list(self.choose())
            if not self._wave:
                return None
        return self.point(self._wave.pop(0))

    def take(self, n: int) -> list[Any]:
        """Up to ``n`` points of the current wave (never into the next: ``choose`` must see the
        whole wave's results first)."""
        if not self._wave:
            self._wave = list(self.choose())
        got, self._wave = self._wave[:n], self._wave[n:]
        return [self.point(i) for i in got]

    def release(self, point: Any) -> None:
        self._wave.insert(0, point.index)


@dataclass
class ListSink:
    """Collects results in memory; ``on_point(record)`` is called for each."""

    on_point: Callable[[dict[str, Any]], None] | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    def put(self, record: dict[str, Any], *, cached: bool, eval_s: float) -> Outcome:
        self.results.append(record)
        if self.on_point is not None:
            self.on_point(record)
        return "new"


class MemoryPointCache:
    """A dict-backed :class:`PointCache` (within one process)."""

    def __init__(self) -> None:
        self._d: dict[str, dict[str, Any]] = {}

    def get(self, key: str) -> dict[str, Any] | None:
        v = self._d.get(key)
        return copy.deepcopy(v) if v is not None else None

    def set(self, key: str, measured: dict[str, Any]) -> None:
        self._d[key] = copy.deepcopy(measured)


__all__ = [
    "DriveStats",
    "ListSink",
    "ListSource",
    "MemoryPointCache",
    "Outcome",
    "PointCache",
    "PointTimeLimit",
    "PointSource",
    "Sink",
    "Stopped",
    "WaveSource",
    "between_batches",
    "drive",
]
