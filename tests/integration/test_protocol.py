"""The lease / record / finish / end scripts against the real Redis, step by step: the races
a timing-dependent end-to-end test would hit only by luck (a slow worker whose lease
expired, a finisher whose lock expired, cancel while a run is being finished).

Runs here are fabricated hashes that no worker is told about (no task is sent).
"""

from __future__ import annotations

import json
import secrets
import time

import pytest

from backend.app import runs as book
from service.runstate import RunKeys, RunQueue
from service.store import Store


@pytest.fixture
def make_run(stack):
    """``make_run(total)`` → a RunQueue over a fresh run with todo ``0..total-1``."""
    r = stack.redis()
    made: list[str] = []

    def make(total: int) -> RunQueue:
        run_id = "proto-" + secrets.token_urlsafe(8)
        k = RunKeys(run_id)
        r.hset(
            k.run,
            mapping={
                "spec": "{}",
                "status": "queued",
                "total": total,
                "done": 0,
                "created": repr(time.time()),
            },
        )
        r.rpush(k.todo, *range(total))
        made.append(run_id)
        return RunQueue(r, run_id)

    yield make
    for run_id in made:
        r.delete(*RunKeys(run_id).all())


def point(i: int) -> dict:
    return {"index": i, "coords": {"alpha": i / 10}, "metrics": {"loss": 1.0 + i}}


def record_all(q: RunQueue, total: int) -> None:
    for _ in range(total):
        i = q.lease(30).index
        assert q.record(i, point(i), worker="w", cached=False) == 1


def test_a_slow_worker_and_its_replacement_record_the_point_once(make_run):
    q = make_run(2)
    assert q.lease(0.2).index == 0  # the slow worker A
    time.sleep(0.3)  # A's lease expires (its heartbeat stalled)
    assert q.lease(30).index == 0  # B takes the point over
    assert q.r.hget(q.keys.run, "requeued") == "1"
    assert q.record(0, point(0), worker="A", cached=False) == 1
    assert q.record(0, point(0), worker="B", cached=False) == 0  # a duplicate is not recorded
    assert q.r.xlen(q.keys.points) == 1 and q.r.hget(q.keys.run, "done") == "1"


def test_a_point_recorded_late_is_not_leased_and_evaluated_again(make_run):
    q = make_run(3)
    assert [q.lease(0.2).index, q.lease(0.2).index] == [0, 1]  # two slow workers
    time.sleep(0.3)
    assert q.lease(30).index == 0  # both leases requeued (in order); this worker pops 0 ...
    assert q.record(1, point(1), worker="slow", cached=False) == 1  # ... 1 is recorded late
    nxt = q.lease(30)
    assert nxt.index == 2  # 1 is done: skipped, not evaluated a second time
    assert q.record(0, point(0), worker="b", cached=False) == 1
    assert q.record(2, point(2), worker="b", cached=False) == 1
    left = q.lease(30)
    assert left.index is None and left.leases_left == 0
    assert q.claim_finish("fin", 5) == 1  # todo and leases empty, every point recorded


def test_only_the_lock_holder_finishes_and_an_expired_finisher_cannot(make_run):
    q = make_run(2)
    q.lease(30)
    assert q.claim_finish("early", 5) == -3  # points still to do: nothing to finish yet
    q.r.delete(q.keys.final)
    q.r.rpush(q.keys.todo, 0)  # put the leased point back, as a requeue would
    q.r.zrem(q.keys.leases, 0)
    record_all(q, 2)
    assert q.claim_finish("first", 0.2) == 1
    assert q.claim_finish("second", 5) == 0  # held: the second worker waits
    time.sleep(0.3)  # the first finisher stalled (or died): its lock expired
    assert q.claim_finish("second", 5) == 1
    late = q.end("done", summary={"who": "first"}, token="first")
    assert not late.ok  # it lost the lock: it must not end the run
    assert q.r.hget(q.keys.run, "status") != "done"
    assert q.end("done", summary={"who": "second"}, token="second").ok
    assert json.loads(q.r.hget(q.keys.run, "summary")) == {"who": "second"}
    assert q.r.hget(q.keys.run, "persist") == "pending"


def test_cancel_during_a_finish_is_refused_and_a_finish_after_cancel_is_too(make_run, tmp_path):
    store = Store(tmp_path / "store")
    q = make_run(2)
    record_all(q, 2)
    assert q.claim_finish("fin", 5) == 1
    with pytest.raises(book.RunConflict, match="being finished"):
        book.cancel_run(q.r, q.keys.id, store)
    assert q.end("done", token="fin").ok
    assert q.r.hget(q.keys.run, "status") == "done"

    q2 = make_run(3)
    i = q2.lease(30).index
    assert book.cancel_run(q2.r, q2.keys.id, store) == "cancelled"
    assert q2.record(i, point(i), worker="w", cached=False) == -2  # the point in hand: refused
    assert q2.lease(30).status == "cancelled"
    assert q2.claim_finish("fin", 5) == -2
    assert not q2.end("done", token="fin").ok
    doc = store.load_run(q2.keys.id)
    assert doc["status"] == "cancelled" and doc["points"] == [] and doc["total"] == 3
    assert q2.r.hget(q2.keys.run, "persist") is None  # stored: nothing pending
    with pytest.raises(book.RunConflict, match="already cancelled"):
        book.cancel_run(q2.r, q2.keys.id, store)


def test_a_run_deleted_while_it_is_stored_is_not_resurrected(make_run, tmp_path):
    from service.documents import persist_run

    store = Store(tmp_path / "store")
    q = make_run(1)
    record_all(q, 1)
    assert q.end("failed", error="boom").ok

    class DeletingStore:  # the API deletes the run just as the document is written
        def save_run(self, run_id, doc):
            store.save_run(run_id, doc)
            book.delete_run(q.r, store, run_id)

        def delete_run(self, run_id):
            store.delete_run(run_id)

    assert persist_run(q.r, DeletingStore(), q.keys.id) is False
    assert store.load_run(q.keys.id) is None


def _script(q) -> list:
    """One scenario of protocol steps whose answers do not depend on time; returns them."""
    out: list = []
    i0 = q.lease(30).index
    i1 = q.lease(30).index
    out += [i0, i1, q.lease(30).leases_left]
    out += [q.begin(i0), q.begin(i0), q.begin(i1), q.overdue(3600.0)]  # first lease time only
    out.append(q.record(i0, point(i0), worker="w", cached=False))
    out.append(q.record(i0, point(i0), worker="w2", cached=True))  # a duplicate
    out.append(q.claim_finish("early", 5))  # a point is still leased
    out.append(q.record(i1, point(i1), worker="w", cached=True))
    out.append(q.lease(30).index)  # nothing left
    out.append(q.claim_finish("f1", 5))
    out.append(q.claim_finish("f2", 5))  # held by f1
    out.append(q.end("cancelled").status)  # refused: f1 is finishing
    out.append(q.end("done", token="f2").ok)
    out.append(q.end("done", token="f1").ok)
    out.append(q.end("failed").status)
    out.append(q.record(i1, point(i1), worker="late", cached=False))
    out.append(q.lease(30).status)
    info = q.info()
    out.append({k: info.get(k) for k in ("status", "done", "cached", "evaluations", "persist")})
    out.append([p["index"] for p in q.points()])
    return out


def test_the_in_memory_protocol_answers_as_the_lua_scripts_do(make_run):
    """``MemoryRunQueue`` stands in for Redis in the drive-loop unit tests: the same steps
    must get the same answers from both, or those tests prove nothing about the real one."""
    from service.runstate.memory import MemoryRunState

    redis_answers = _script(make_run(2))
    memory_answers = _script(MemoryRunState().create("m", {}, [0, 1]))
    assert memory_answers == redis_answers
