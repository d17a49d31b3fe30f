"""The drive loop and the lease protocol, without Redis: :class:`MemoryRunQueue` with a clock
the test moves, a real Landscape on tiny BERT checkpoints.

What a user would notice: a point evaluated twice or lost when a worker dies, a run that
never finishes or is finished twice, a cancel that does not stop the workers, the CLI and
the service giving different numbers for the same spec.
"""

from __future__ import annotations

import pytest

from basin import FileResolver, Landscape, run
from basin.drive import MemoryPointCache, PointTimeLimit, drive
from service.runstate.drain import (
    LeaseSource,
    StopFlag,
    StreamSink,
    fail_overdue,
    fail_run,
    finish_run,
)
from service.runstate.memory import MemoryRunState
from tests.core import helpers

SPEC = {"path": {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 5}, "dataset": "eval.csv"}


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def land(classifier_family):
    spec = helpers.cpu_spec(SPEC)
    land = Landscape.open(spec, FileResolver(classifier_family["data"].parent))
    yield land
    land.close()


@pytest.fixture(scope="module")
def reference(classifier_family):
    """The CLI's answer for the same spec (the in-process loop)."""
    doc = run(helpers.cpu_spec(SPEC), FileResolver(classifier_family["data"].parent), progress=False)
    return {p["index"]: p["metrics"] for p in doc["points"]}


def _queue(land, clock=None):
    state = MemoryRunState(clock or Clock())
    order = [p.index for p in land.points()]
    return state, state.create("run1", {"path": {"type": "linear"}}, order)


def _no_sleep(_s: float) -> None:
    raise AssertionError("the source waited although no other worker holds a lease")


def test_two_workers_record_every_point_exactly_once_with_the_cli_numbers(land, reference):
    _, q = _queue(land)
    # two workers alternate: each takes one point per turn until nothing is left
    sources = [LeaseSource(q, land.point, lease_s=30, sleep=_no_sleep) for _ in range(2)]
    sinks = [StreamSink(q, worker=f"w{i}") for i in range(2)]

    class OnePoint:
        def __init__(self, src):
            self.src, self.given = src, False

        def next(self):
            if self.given:
                return None
            self.given = True
            return self.src.next()

        def release(self, point):
            self.src.release(point)

    turns = 0
    while q.info()["done"] != "5":
        i = turns % 2
        drive(land, OnePoint(sources[i]), sinks[i])
        turns += 1
    pts = q.points()
    assert [p["index"] for p in pts] == [0, 1, 2, 3, 4]
    for p in pts:
        assert p["metrics"] == pytest.approx(reference[p["index"]], abs=1e-6)
    assert q.info()["evaluations"] == "5"
    assert finish_run(q, land.summary) == "done"
    info = q.info()
    assert info["status"] == "done" and info["persist"] == "pending"
    assert "loss" in q.info()["summary"]


def test_a_dead_workers_lease_expires_and_the_point_is_done_once(land):
    clock = Clock()
    _, q = _queue(land, clock)
    dead = LeaseSource(q, land.point, lease_s=30)
    taken = dead.next()  # the worker dies holding this lease: it never records
    assert taken is not None
    survivor = LeaseSource(q, land.point, lease_s=30, sleep=lambda s: setattr(clock, "t", clock.t + 31))
    stats = drive(land, survivor, StreamSink(q, worker="survivor"))
    assert stats.evaluated == 5  # including the dead worker's point, once its lease expired
    assert q.info()["requeued"] == "1"
    # the dead worker comes back late: its point is not recorded a second time
    late = StreamSink(q, worker="dead").put(
        {"index": taken.index, "coords": dict(taken.coords), "metrics": {"loss": 9.9}},
        cached=False, eval_s=0.0,
    )
    assert late == "duplicate"
    assert len(q.points()) == 5
    assert next(p for p in q.points() if p["index"] == taken.index)["metrics"]["loss"] != 9.9


def test_only_one_worker_finishes_and_done_needs_the_lock(land):
    _, q = _queue(land)
    drive(land, LeaseSource(q, land.point, lease_s=30), StreamSink(q, worker="w"))
    # another finisher holds the lock: this one waits, and cannot end the run itself
    assert q.claim_finish("other", 10) == 1
    assert finish_run(q, land.summary) == "wait"
    assert not q.end("done", token="mine").ok
    assert not q.end("cancelled").ok  # nobody else may end it while a finisher holds it
    assert q.end("done", token="other").ok
    assert finish_run(q, land.summary) == "over"


def test_the_finish_lock_of_a_dead_finisher_expires(land):
    clock = Clock()
    _, q = _queue(land, clock)
    drive(land, LeaseSource(q, land.point, lease_s=30), StreamSink(q, worker="w"))
    assert q.claim_finish("dead-finisher", 5) == 1
    clock.t += 6
    assert finish_run(q, land.summary) == "done"


def test_cancel_stops_every_worker_and_refuses_the_point_in_hand(land):
    _, q = _queue(land)
    src = LeaseSource(q, land.point, lease_s=30)
    point = src.next()
    assert q.end("cancelled").ok
    rec = {"index": point.index, "coords": dict(point.coords), "metrics": {"loss": 1.0}}
    assert StreamSink(q, worker="w").put(rec, cached=False, eval_s=0.0) == "ended"
    stats = drive(land, LeaseSource(q, land.point, lease_s=30), StreamSink(q, worker="w2"))
    assert stats.evaluated == 0
    assert q.points() == []


def test_a_failed_run_keeps_its_message_and_is_written(land):
    _, q = _queue(land)
    written = []
    assert fail_run(q, "bad checkpoint", lambda: written.append(q.info()["status"]))
    assert q.info()["error"] == "bad checkpoint" and written == ["failed"]
    assert not fail_run(q, "again")  # an ended run stays as it ended


def test_the_point_cache_answers_repeated_points_without_evaluating(land):
    cache = MemoryPointCache()
    _, q1 = _queue(land)
    first = drive(land, LeaseSource(q1, land.point, lease_s=30), StreamSink(q1, worker="w"),
                  cache=cache)
    _, q2 = _queue(land)
    second = drive(land, LeaseSource(q2, land.point, lease_s=30), StreamSink(q2, worker="w"),
                   cache=cache)
    assert (first.evaluated, first.reused) == (5, 0)
    assert (second.evaluated, second.reused) == (0, 5)
    assert q2.points() == q1.points()
    assert q2.info()["cached"] == "5"


def test_rescue_rules_for_orphaned_and_lost_runs(land):
    clock = Clock()
    _, q = _queue(land, clock)
    # queued: tasks may still be on their way, so no rescue within the grace period
    assert not q.claim_rescue(draining=False, ttl_s=60, idle_worker=True, grace_s=10)
    clock.t += 11
    assert not q.claim_rescue(draining=False, ttl_s=60, idle_worker=False, grace_s=10)
    assert q.claim_rescue(draining=False, ttl_s=60, idle_worker=True, grace_s=10)
    assert not q.claim_rescue(draining=False, ttl_s=60, idle_worker=True, grace_s=10)  # pending
    q.clear_rescue()  # a worker took the task
    src = LeaseSource(q, land.point, lease_s=30)
    src.next()  # running, with a live lease: not orphaned
    assert not q.claim_rescue(draining=False, ttl_s=60)
    clock.t += 31  # the lease expired and nobody drains the run: orphaned
    assert not q.claim_rescue(draining=True, ttl_s=60)
    assert q.claim_rescue(draining=False, ttl_s=60)


@pytest.fixture(scope="module")
def small_batches(classifier_family):
    """The same run with batches of 2 examples: a point is several batches."""
    spec = helpers.cpu_spec({**SPEC, "batch_size": 2})
    land = Landscape.open(spec, FileResolver(classifier_family["data"].parent))
    assert len(land.evaluator.batches) >= 3
    yield land
    land.close()


def test_cancel_stops_within_the_point_in_hand(small_batches):
    land = small_batches
    _, q = _queue(land)
    flag = StopFlag(q, every_s=0.0)
    checks: list[bool] = []

    class CancelWhenItStarts:  # the user presses Cancel while the first point is evaluated
        def __getattr__(self, name):
            return getattr(land, name)

        def measure(self, point):
            assert q.end("cancelled").ok
            return land.measure(point)

    def should_stop() -> bool:
        checks.append(flag())
        return checks[-1]

    stats = drive(CancelWhenItStarts(), LeaseSource(q, land.point, lease_s=30),
                  StreamSink(q, worker="w"), should_stop=should_stop)
    assert stats.stopped == "cancelled" and stats.evaluated == 0
    # asked once before the point and once after its first batch: the other batches never ran
    assert checks == [False, True]
    assert q.points() == [] and q.info()["status"] == "cancelled"


def test_a_point_over_the_time_limit_fails_with_its_index_and_the_limit(land):
    _, q = _queue(land)
    src = LeaseSource(q, land.point, lease_s=30)
    with pytest.raises(PointTimeLimit, match=r"point 0 exceeded the per-point time limit of 1e-09 s"):
        drive(land, src, StreamSink(q, worker="w"), point_time_limit_s=1e-9)
    assert q.points() == []


def test_the_reaper_check_fails_a_run_whose_point_is_wedged(land):
    clock = Clock()
    _, q = _queue(land, clock)
    src = LeaseSource(q, land.point, lease_s=30)
    drive(land, _Take(src, 1), StreamSink(q, worker="w"))  # point 0: recorded in time
    wedged = src.next()  # point 1: its worker never comes back from it
    clock.t += 5
    assert not fail_overdue(q, 10.0)
    clock.t += 100  # requeued to another worker, wedged again: the first lease counts
    q.lease(30)
    written = []
    assert fail_overdue(q, 10.0, lambda: written.append(q.info()["error"]))
    msg = f"point {wedged.index} exceeded the per-point time limit of 10 s"
    assert q.info()["status"] == "failed" and q.info()["error"].startswith(msg)
    assert written and written[0].startswith(msg)
    assert not fail_overdue(q, 10.0)  # an ended run stays as it ended


def test_a_run_left_mid_point_while_the_service_was_down_is_not_failed_on_return(land):
    """``basin up`` stopped overnight with a point in hand (Redis keeps it on disk): the
    next morning the point is leased again and gets a fresh time, not a failure."""
    clock = Clock()
    _, q = _queue(land, clock)
    src = LeaseSource(q, land.point, lease_s=30, point_limit_s=10.0)
    taken = src.next()
    clock.t += 12 * 3600  # nobody was watching; the lease expired long ago
    assert not fail_overdue(q, 10.0)  # nobody holds the point: it is not running
    again = LeaseSource(q, land.point, lease_s=30, point_limit_s=10.0).next()
    assert again.index == taken.index
    assert not fail_overdue(q, 10.0)  # its time started again with this lease
    clock.t += 11
    assert fail_overdue(q, 10.0)  # but this worker is held to the limit


class _Take:
    """A source that hands out at most ``n`` points of ``src``."""

    def __init__(self, src, n):
        self.src, self.n = src, n

    def next(self):
        if self.n <= 0:
            return None
        self.n -= 1
        return self.src.next()

    def release(self, point):
        self.src.release(point)


def test_an_adaptive_run_is_drained_wave_by_wave_by_the_lock_holder(classifier_family):
    """Two workers drain an adaptive run; whoever takes the finish lock after a wave queues the
    next one (the other goes on draining), and the run ends with the CLI's points."""
    spec = helpers.cpu_spec({**SPEC, "path": {**SPEC["path"], "points": 9},
                             "refine": {"budget": 6, "levels": 2, "wave": 1}})
    resolver = FileResolver(classifier_family["data"].parent)
    want = run(spec, resolver, progress=False)
    with Landscape.open(spec, resolver) as land:
        state = MemoryRunState(Clock())
        q = state.create("adaptive", spec.model_dump(mode="json"), [0, 8, 4])
        src = [LeaseSource(q, land.point, lease_s=30, sleep=_no_sleep) for _ in range(2)]
        sinks = [StreamSink(q, worker=f"w{i}") for i in range(2)]
        # worker 0 drains the coarse wave; worker 1 arrives with nothing to lease
        drive(land, src[0], sinks[0])
        assert q.claim_finish("w1-lock", 10) == 1  # worker 1 is finishing (choosing) ...
        assert finish_run(q, land.summary, refine=land.next_wave) == "wait"  # ... worker 0 waits
        assert q.extend(land.next_wave(q.points()), "w1-lock") == 1  # the lock holder queues the wave
        assert finish_run(q, land.summary, refine=land.next_wave) == "more"  # and worker 0 drains it
        outcomes = []
        while True:
            drive(land, src[0], sinks[0])
            outcomes.append(finish_run(q, land.summary, refine=land.next_wave))
            if outcomes[-1] != "more":
                break
        assert outcomes == ["more", "more", "done"] and q.info()["status"] == "done"
        assert int(q.info()["waves"]) == 3 and int(q.info()["total"]) == 6
        got = sorted((p["index"], p["metrics"]["loss"]) for p in q.points())
        assert [i for i, _ in got] == sorted(p["index"] for p in want["points"])
        assert q.extend([1], "w1-lock") == -2  # an ended run takes no more points


def test_groups_of_leased_points_go_through_one_pass_each_and_are_recorded_once(land, reference):
    """A worker with ``points_per_pass`` 3 leases three points at a time (``LeaseSource.take``), the
    heartbeat keeps all three leases, and the records equal the CLI's one point at a time."""
    _, q = _queue(land)

    class Beat:
        def __init__(self) -> None:
            self.held: list[list[int]] = []

        def working_on(self, queue, index=None) -> None:
            pass

        def working_on_all(self, queue, indices) -> None:
            self.held.append(list(indices))

    beat = Beat()
    calls: list[int] = []
    many = land.measure_many
    land.points_per_pass = 3
    try:
        land.measure_many = lambda pts: calls.append(len(pts)) or many(pts)  # type: ignore[method-assign]
        stats = drive(land, LeaseSource(q, land.point, lease_s=30, heartbeat=beat, sleep=_no_sleep),
                      StreamSink(q, worker="w"))
    finally:
        del land.measure_many
        land.points_per_pass = 1
    assert stats.evaluated == 5 and calls == [3, 2]
    assert beat.held == [[p.index for p in land.points()[:3]], [p.index for p in land.points()[3:]]]
    pts = q.points()
    assert sorted(p["index"] for p in pts) == [0, 1, 2, 3, 4]
    for p in pts:
        assert p["metrics"] == pytest.approx(reference[p["index"]], abs=1e-5)
