"""The ``tune`` kind's bookkeeping on a real Redis (issue 25), without Celery or training: a
family is one job whose members are tasks of their own; a member whose worker died is
re-queued as a new attempt (its task sent again) up to three attempts, then fails saying so;
the attempt the reaper gave up on can no longer end its member (each member ends once); the
family's status follows its members'; cancel ends queued members at once and flags running
ones. The real stack runs the same rules end to end in ``tests/integration/test_tunes.py``.
"""

from __future__ import annotations

import pytest
import redis

from basin.status import CANCELLED, DONE, FAILED, QUEUED, RUNNING
from basin.tune import parse_tune_spec
from service.jobs import ReapContext
from service.jobs.tune import (
    MAX_ATTEMPTS,
    TUNE,
    TuneConflict,
    cancel_tune,
    create_tune,
    tune_detail,
)


@pytest.fixture
def red(redis_url) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


def family(red, redis_url, **kw) -> str:
    spec = parse_tune_spec(
        {"base": "b" * 64, "dataset": "d" * 64, "seeds": [0, 1], "steps": 5, **kw}
    )
    return create_tune(red, spec, names={}, redis_url=redis_url, queue="tune-test")


def test_a_dead_members_worker_requeues_it_until_its_attempts_run_out_and_a_stale_attempt_cannot_end_it(
    red, redis_url
):
    tune_id = family(red, redis_url)
    assert red.llen("tune-test") == 2  # one task per member
    sent: list[tuple[str, list[str]]] = []
    ctx = ReapContext(alive=[], grace_s=0.0, send_job=lambda name, args: sent.append((name, args)))

    first = TUNE.state(red, f"{tune_id}.0")
    assert first.start("w-a") == "ok"
    assert tune_detail(red, tune_id)["status"] == RUNNING  # the family runs once a member does
    # its worker still announces it: left alone, however old its beat
    TUNE.reap(
        red,
        ReapContext(
            alive=[{"name": "w-a", "job": f"tune:{tune_id}.0"}], grace_s=0.0, send_job=ctx.send_job
        ),
    )
    assert sent == [] and first.holds()

    TUNE.reap(red, ctx)  # nobody announces it: queued again, its task sent again
    assert sent == [("basin.job", ["tune", f"{tune_id}.0"])]
    m0 = tune_detail(red, tune_id)["member_list"][0]
    assert (m0["status"], m0["attempt"], m0["lost_worker"], m0["losses"]) == (QUEUED, 2, "w-a", [])
    assert not first.holds() and first.should_stop()
    assert first.end(DONE) == QUEUED  # the dead attempt's late end changes nothing

    second = TUNE.state(red, f"{tune_id}.0")
    assert second.start("w-b") == "ok"
    assert first.end(DONE) == "stale"  # running again, but held by another attempt
    for _ in range(MAX_ATTEMPTS - 2):  # its workers keep dying
        TUNE.reap(red, ctx)
        assert TUNE.state(red, f"{tune_id}.0").start("w-c") == "ok"
    TUNE.reap(red, ctx)
    m0 = tune_detail(red, tune_id)["member_list"][0]
    assert m0["status"] == FAILED and m0["attempt"] == MAX_ATTEMPTS
    assert f"its worker died {MAX_ATTEMPTS} times" in m0["error"]

    # the other member ends done: every member has ended, one failed → the family failed, saying which
    other = TUNE.state(red, f"{tune_id}.1")
    assert other.start("w-d") == "ok" and other.end(DONE, final="x" * 64) == "ok"
    body = tune_detail(red, tune_id)
    assert body["status"] == FAILED and body["error"].startswith("member 0: its worker died")
    assert body["done_members"] == 1 and body["member_list"][1]["final"] == "x" * 64
    report = TUNE.reap(red, ReapContext(alive=[], grace_s=0.0, finished_ttl_s=600))
    assert tune_id in report.expiring
    assert all(0 < red.ttl(k) <= 600 for k in (f"basin:tune:{tune_id}", f"basin:tune:{tune_id}.0"))


def test_cancel_ends_queued_members_at_once_and_stops_running_ones(red, redis_url):
    tune_id = family(red, redis_url, seeds=[0, 1, 2])
    running = TUNE.state(red, f"{tune_id}.0")
    assert running.start("w-a") == "ok" and not running.should_stop()
    assert cancel_tune(red, tune_id) == CANCELLED
    assert running.should_stop()  # before its next step
    statuses = [m["status"] for m in tune_detail(red, tune_id)["member_list"]]
    assert statuses == [RUNNING, CANCELLED, CANCELLED]
    assert TUNE.state(red, f"{tune_id}.1").start("w-b") == CANCELLED  # its task is skipped
    assert running.end(CANCELLED) == "ok"
    assert [m["status"] for m in tune_detail(red, tune_id)["member_list"]] == [CANCELLED] * 3
    with pytest.raises(TuneConflict, match="already cancelled"):
        cancel_tune(red, tune_id)


def test_a_queued_members_lost_task_is_sent_again_once_a_worker_has_stood_idle(red, redis_url):
    tune_id = family(red, redis_url)
    sent: list[list[str]] = []
    idle = [{"name": "w-idle", "run": None, "job": None}]
    ctx = ReapContext(
        alive=idle, grace_s=5.0, queued_grace_s=0.0, send_job=lambda _n, a: sent.append(a)
    )
    busy = ReapContext(
        alive=[{"name": "w-busy", "run": "r"}],
        grace_s=5.0,
        queued_grace_s=0.0,
        send_job=lambda _n, a: sent.append(a),
    )
    TUNE.reap(red, busy)  # every worker is busy: the tasks wait in the queue
    TUNE.reap(red, ctx)  # a worker is idle: noted, not yet
    assert sent == []
    TUNE.reap(red, ctx)  # still idle a grace later with members queued: their tasks were lost
    assert sorted(sent) == [["tune", f"{tune_id}.0"], ["tune", f"{tune_id}.1"]]
    assert TUNE.state(red, f"{tune_id}.0").start("w-idle") == "ok"
    assert TUNE.state(red, f"{tune_id}.0").start("w-other") == RUNNING  # the duplicate is skipped
