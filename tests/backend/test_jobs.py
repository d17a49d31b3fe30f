"""The job kernel (``service.jobs``) on a real Redis: a new kind declared in one place is
created, listed, cancelled, executed and reaped by the kernel; every kind goes through one
set of job limits (issue 24, part 4: a fit's caps, steps, quota, name, time limit and loss
log); a share link reveals its run and nothing else (issue 24, part 5).

Fits here are created through the real API (``TestClient`` over the app, a real Redis) and
executed in-process by the worker's own code (:func:`workers.jobs.run_job`), without a
Celery worker: what is tested is the kernel's bookkeeping, not Celery's delivery (the fit
tests in ``tests/integration`` run fits on real workers).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest
import redis

from basin.errors import InvalidSpec
from basin.status import CANCELLED, DONE, FAILED, QUEUED, RUNNING
from service import jobs
from service.jobs import JobLimits, JobState, ReapContext, WorkerJobKind
from service.jobs.fit import FIT, MAX_LOSSES, FitState
from service.jobs.limits import Caps
from tests.backend.conftest import TOKEN
from tests.backend.test_security import AUTH, fill, spec

# ---- a tiny kind, declared in one place ------------------------------------------------------


class EchoKind(WorkerJobKind):
    """A job that counts to ``steps`` (what a new kind's module declares, and nothing else)."""

    name: ClassVar[str] = "echo"
    label: ClassVar[str] = "echo job"
    executor: ClassVar[str] = "tests.backend.test_jobs:execute_echo"

    def check(self, spec: Any, limits: JobLimits, store: Any, names: dict[str, str]) -> list[str]:
        caps = Caps()
        caps.cap("steps:", spec["steps"], limits.train_steps, "BASIN_MAX_TRAIN_STEPS")
        return caps.lines

    def fields(self, spec: Any, limits: JobLimits) -> dict[str, Any]:
        return {"step": 0, "total": spec["steps"]}

    def summarise(self, job_id: str, h: dict[str, Any], *, public_url: str = "") -> dict[str, Any]:
        return {
            "id": job_id,
            "status": h["status"],
            "steps": json.loads(h["spec"])["steps"],
            "step": int(h.get("step") or 0),
        }


def execute_echo(job_id: str, js: JobState, worker: Any) -> dict:
    """The echo kind's executor: one log entry per step, stops when asked, then ends done."""
    total = int(js.hash()["total"])
    for step in range(1, total + 1):
        if js.should_stop():
            js.end(CANCELLED)
            return {"echo": job_id, "status": CANCELLED}
        js.progress(step, {"step": step})
    js.set(echoed="yes")
    js.end(DONE)
    return {"echo": job_id, "status": DONE}


@pytest.fixture
def echo():
    kind = jobs.register(EchoKind())
    yield kind
    jobs.unregister("echo")


@pytest.fixture
def red(redis_url) -> redis.Redis:
    return redis.Redis.from_url(redis_url, decode_responses=True)


def worker(r: redis.Redis, settings: Any = None) -> SimpleNamespace:
    """What a worker process hands the kernel's worker side (workers.tasks.STATE's fields)."""
    return SimpleNamespace(
        client=r, name="inline-worker", device="cpu", settings=settings, heartbeat=None
    )


def test_a_new_kind_is_created_listed_cancelled_and_executed_by_the_kernel(echo, red, redis_url):
    from workers.jobs import run_job

    limits = JobLimits(train_steps=10)
    before = red.llen("basin")
    # over the kernel's limit: refused with the setting to raise, nothing stored or queued
    with pytest.raises(
        InvalidSpec, match=r"steps: 11 is over this server's limit of 10 \(BASIN_MAX_TRAIN_STEPS\)"
    ):
        jobs.create_job(red, echo, {"steps": 11}, limits=limits, redis_url=redis_url, queue="basin")
    assert red.zcard("basin:echos") == 0 and red.llen("basin") == before

    first = jobs.create_job(
        red, echo, {"steps": 3}, limits=limits, redis_url=redis_url, queue="basin"
    )
    second = jobs.create_job(
        red, echo, {"steps": 4}, limits=limits, redis_url=redis_url, queue="basin"
    )
    assert red.llen("basin") == before + 2  # one worker task each (the generic basin.job task)
    listed = jobs.list_jobs(red, echo)
    assert [(j["id"], j["status"], j["steps"]) for j in listed] == [
        (second, QUEUED, 4),
        (first, QUEUED, 3),
    ]
    assert float(red.hget(f"basin:echo:{first}", "time_limit_s")) == limits.time_limit_s

    # cancel: a queued job ends at once; again is a conflict; an unknown id is not found
    assert jobs.cancel_job(red, echo, second) == CANCELLED
    assert jobs.job_hash(red, echo, second)["status"] == CANCELLED
    with pytest.raises(jobs.JobConflict, match="already cancelled"):
        jobs.cancel_job(red, echo, second)
    with pytest.raises(jobs.JobNotFound, match="no echo job with id"):
        jobs.cancel_job(red, echo, "AAAAAAAAAAAAAAAAAAAAAA")

    # a worker executes it through the kind's executor; a cancelled one is skipped
    assert run_job("echo", first, worker(red)) == {"echo": first, "status": DONE}
    assert run_job("echo", second, worker(red)) == {"echo": second, "skipped": CANCELLED}
    h = jobs.job_hash(red, echo, first)
    assert h["echoed"] == "yes" and "echoed" not in jobs.job_hash(red, echo, second)
    assert h["status"] == DONE and h["worker"] == "inline-worker" and h["step"] == "3"
    assert [json.loads(x)["step"] for x in red.lrange(f"basin:echo:{first}:log", 0, -1)] == [
        1,
        2,
        3,
    ]

    # the reaper's rules are the kernel's: ended jobs' keys get the ended-run TTL
    report = echo.reap(red, ReapContext(alive=[], grace_s=5.0, finished_ttl_s=600))
    assert {first, second} <= set(report.expiring)
    assert (
        0 < red.ttl(f"basin:echo:{first}") <= 600 and 0 < red.ttl(f"basin:echo:{first}:log") <= 600
    )
    assert red.zcard("basin:echos:active") == 0


def test_a_running_job_whose_worker_died_is_failed_by_the_reaper(echo, red, redis_url):
    job = jobs.create_job(
        red, echo, {"steps": 5}, limits=JobLimits(), redis_url=redis_url, queue="basin"
    )
    js = echo.state(red, job)
    assert js.start("gone-worker") == "ok"
    # its worker still announces it: alive, whatever its beat
    alive = [{"name": "gone-worker", "job": f"echo:{job}"}]
    assert job not in echo.reap(red, ReapContext(alive=alive, grace_s=0.0)).failed
    # nobody announces it and the grace has passed: failed, saying so
    report = echo.reap(red, ReapContext(alive=[], grace_s=0.0))
    assert job in report.failed
    h = jobs.job_hash(red, echo, job)
    assert h["status"] == FAILED and h["error"].startswith("its worker (gone-worker) died")
    assert js.end(DONE) == FAILED  # a late end of the dead worker changes nothing


# ---- one set of job limits for fits -------------------------------------------------------


def fit_body(**kw) -> dict:
    return {
        "a": "ft_a",
        "b": "ft_b",
        "dataset": "eval.csv",
        "steps": 5,
        "max_examples": 8,
        "batch_size": 4,
        "max_length": 32,
        "eval_points": 3,
        "lr": 1e-3,
        # these tests are about the job's limits, not its data: the tiny store has one dataset
        "allow_overlap": True,
        **kw,
    }


def _used(root: Path) -> int:
    from service.store import Store

    return Store(root).used_bytes()


@pytest.mark.parametrize(
    ("settings", "change", "needle"),
    [
        (
            {"max_examples": 16},
            {"max_examples": 64},
            "max_examples: 64 is over this server's limit of 16",
        ),
        (
            {"max_length": 16},
            {"max_length": 32},
            "max_length: 32 is over this server's limit of 16",
        ),
        (
            {"max_batch_size": 2},
            {"batch_size": 4},
            "batch_size: 4 is over this server's limit of 2",
        ),
        ({"max_scope_length": 8}, {"scope": r"encoder\.layer\.0\..*"}, "BASIN_MAX_SCOPE_LENGTH"),
        (
            {},
            {"steps": 1_000_000},
            "steps: 1000000 is over this server's limit of 100000 (BASIN_MAX_TRAIN_STEPS)",
        ),
        (
            {"max_points": 4},
            {"eval_points": 9},
            "line evaluation run's points: 9 is over this server's limit of 4",
        ),
        ({}, {"name": "n" * 190}, "not a valid checkpoint name"),
        ({"max_store_bytes": "quota"}, {}, "BASIN_MAX_STORE_BYTES"),
    ],
    ids=[
        "examples",
        "length",
        "batch-size",
        "scope-length",
        "steps",
        "eval-points",
        "name",
        "quota",
    ],
)
def test_a_fit_over_a_job_limit_is_422_naming_it_and_nothing_is_queued(
    make_client, classifier_family, redis_url, red, settings, change, needle
):
    filler = make_client(redis_url=redis_url)
    fill(filler, classifier_family)
    if settings.get("max_store_bytes") == "quota":  # the store is full but for half a checkpoint
        size = filler.get("/api/checkpoints/ft_a").json()["size_bytes"]
        settings = {"max_store_bytes": _used(filler.store_root) + size // 2}
    client = make_client(redis_url=redis_url, **settings)
    fits, tasks = red.zcard("basin:fits"), red.llen("basin")
    r = client.post("/api/fits", json=fit_body(**change))
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"]
    assert red.zcard("basin:fits") == fits and red.llen("basin") == tasks
    # within the limits the same fit is accepted
    ok = make_client(redis_url=redis_url).post("/api/fits", json=fit_body())
    assert ok.status_code == 201, ok.text


def test_a_fit_stops_at_the_time_limit_fails_saying_so_and_stores_nothing(
    make_client, classifier_family, redis_url, red
):
    from workers.jobs import run_job

    client = make_client(redis_url=redis_url, job_time_limit_s=1e-6)
    fill(client, classifier_family)
    fit_id = client.post("/api/fits", json=fit_body(steps=50)).json()["id"]
    settings = client.app.state.settings
    out = run_job("fit", fit_id, worker(red, settings))
    body = client.get(f"/api/fits/{fit_id}").json()
    assert body["status"] == FAILED, (out, body)
    assert "time limit" in body["error"] and "BASIN_JOB_TIME_LIMIT_S" in body["error"]
    assert body["step"] < 50 and body["control"] is None and body["runs"] == {}
    assert not [
        c
        for c in client.get("/api/checkpoints").json()
        if (c.get("tags") or {}).get("fit") == fit_id
    ]


def test_the_reaper_fails_a_fit_past_its_time_limit_even_while_its_worker_beats(
    make_client, red, redis_url
):
    client = make_client(redis_url=redis_url)
    fit_id = jobs.create_job(
        red,
        FIT,
        _resolved_fit(),
        limits=JobLimits(time_limit_s=30),
        redis_url=redis_url,
        queue="basin-test-none",
    )
    fs = FitState(red, fit_id)
    assert fs.start("wedged") == "ok"
    alive = [{"name": "wedged", "job": f"fit:{fit_id}", "fit": fit_id}]
    assert fit_id not in FIT.reap(red, ReapContext(alive=alive, grace_s=5)).failed  # in time
    sec, _ = red.time()
    red.hset(f"basin:fit:{fit_id}", "begun", sec - 60)  # as a minute after it began
    assert fit_id in FIT.reap(red, ReapContext(alive=alive, grace_s=5)).failed
    body = client.get(f"/api/fits/{fit_id}").json()
    assert body["status"] == FAILED and "time limit of 30 s" in body["error"]


def _resolved_fit(**kw):
    from basin.fit import FitSpec

    return FitSpec.model_validate({"a": "a" * 64, "b": "b" * 64, "dataset": "d" * 64, **kw})


def test_a_long_fit_keeps_a_bounded_loss_log(make_client, red, redis_url):
    client = make_client(redis_url=redis_url)
    steps = 2 * MAX_LOSSES + 500
    fit_id = jobs.create_job(
        red,
        FIT,
        _resolved_fit(steps=steps),
        limits=JobLimits(),
        redis_url=redis_url,
        queue="basin-test-none",
    )
    fs = FitState(red, fit_id)
    assert fs.start("w") == "ok"
    for step in range(1, steps + 1):
        fs.step(step, float(step), None)
    body = client.get(f"/api/fits/{fit_id}").json()
    assert body["step"] == steps and body["loss_stride"] == 3
    assert len(body["losses"]) <= MAX_LOSSES and body["losses"][-1]["step"] == steps
    # each entry is the mean of its stride's losses (here the losses are the step numbers)
    assert body["losses"][0] == {"step": 3, "loss": 2.0}


# ---- what a link reveals -------------------------------------------------------------------


def test_a_runs_link_lists_only_its_own_fits_without_the_token(
    make_client, classifier_family, redis_url, red
):
    client = make_client(api_token=TOKEN, redis_url=redis_url)
    fill(client, classifier_family, AUTH)
    mine = client.post("/api/runs", json=spec(), headers=AUTH).json()["id"]
    other = client.post("/api/runs", json=spec(), headers=AUTH).json()["id"]
    fit_id = client.post("/api/fits", json=fit_body(), headers=AUTH).json()["id"]
    fs = FitState(red, fit_id)  # as its worker would: it ended, its line evaluation is `mine`
    assert fs.start("w") == "ok"
    fs.set(runs={"line": mine, "curve": other})
    assert fs.end(DONE) == "ok"

    own = client.get(f"/api/runs/{mine}/fitted").json()["fits"]
    assert [f["fit"] for f in own] == [fit_id]
    # another run between the same checkpoints: its link reveals no one else's fit
    theirs = client.get(f"/api/runs/{other}/fitted")
    assert theirs.status_code == 200 and theirs.json()["fits"] == [] and fit_id not in theirs.text
    # with the token, every fit between the same endpoints (as GET /api/fits shows them)
    assert fit_id in [
        f["fit"] for f in client.get(f"/api/runs/{other}/fitted", headers=AUTH).json()["fits"]
    ]
    # a fit started from a run's page (?from_run=) is that run's: its link shows it, only it
    started = client.post(
        "/api/fits", json=fit_body(), params={"from_run": other}, headers=AUTH
    ).json()["id"]
    assert [f["fit"] for f in client.get(f"/api/runs/{other}/fitted").json()["fits"]] == [started]
    assert [f["fit"] for f in client.get(f"/api/runs/{mine}/fitted").json()["fits"]] == [fit_id]
    for bad in ("AAAAAAAAAAAAAAAAAAAAAA", "basin:runs"):
        r = client.post("/api/fits", json=fit_body(), params={"from_run": bad}, headers=AUTH)
        assert r.status_code == 422 and "from_run" in r.json()["detail"], r.text


def test_health_names_no_run_without_the_token(make_client, redis_url, red):
    from backend.app.api.routes.health import DEMO_LM_STATUS_KEY

    client = make_client(api_token=TOKEN, redis_url=redis_url)
    run_id = "Zq3" + "x" * 19
    red.set(
        DEMO_LM_STATUS_KEY,
        json.dumps(
            {
                "state": "done",
                "fraction": 1.0,
                "stage": "ready",
                "run_id": run_id,
                "run_url": f"http://h/runs/{run_id}",
                "warning": f"see run {run_id}",
                "updated": time.time(),
            }
        ),
    )
    try:
        open_ = client.get("/api/health")
        assert open_.status_code == 200 and run_id not in open_.text
        assert open_.json()["demo_lm"]["state"] == "done"  # the banner still has its progress
        assert client.get("/api/health", headers=AUTH).json()["demo_lm"]["run_id"] == run_id
        # a server without a token is open (GET /api/runs lists every run): health names it
        assert (
            make_client(redis_url=redis_url).get("/api/health").json()["demo_lm"]["run_id"]
            == run_id
        )
    finally:
        red.delete(DEMO_LM_STATUS_KEY)


def test_job_state_is_running_between_start_and_end(echo, red, redis_url):
    job = jobs.create_job(
        red, echo, {"steps": 1}, limits=JobLimits(), redis_url=redis_url, queue="basin"
    )
    js = echo.state(red, job)
    assert not js.running() and js.start("w") == "ok" and js.running()
    assert js.start("w2") == RUNNING  # a second delivery does not take it
    assert js.end(DONE) == "ok" and not js.running()


def test_a_forgotten_fits_curve_is_shown_on_its_own_line_runs_link_only(
    make_client, classifier_family, redis_url, red
):
    from workers.jobs import run_job

    client = make_client(api_token=TOKEN, redis_url=redis_url)
    fill(client, classifier_family, AUTH)
    other = client.post("/api/runs", json=spec(), headers=AUTH).json()["id"]
    fit_id = client.post("/api/fits", json=fit_body(steps=2), headers=AUTH).json()["id"]
    # the worker's own code trains, stores the control and queues both evaluation runs
    assert run_job("fit", fit_id, worker(red, client.app.state.settings))["status"] == DONE
    runs = client.get(f"/api/fits/{fit_id}").json()["runs"]
    red.delete(f"basin:fit:{fit_id}", f"basin:fit:{fit_id}:losses")  # as once its keys expired
    found = client.get(f"/api/runs/{runs['line']}/fitted").json()["fits"]
    assert [(f["fit"], f["curve_run"]) for f in found] == [(None, runs["curve"])]
    assert client.get(f"/api/runs/{other}/fitted").json()["fits"] == []
    with_token = client.get(f"/api/runs/{other}/fitted", headers=AUTH).json()["fits"]
    assert runs["curve"] in [
        f["curve_run"] for f in with_token
    ]  # (and other tests' fits on this Redis)


def test_a_fit_whose_control_no_longer_fits_the_quota_fails_before_writing_it(
    make_client, classifier_family, redis_url, red
):
    from workers.jobs import run_job

    client = make_client(redis_url=redis_url)
    fill(client, classifier_family)
    fit_id = client.post("/api/fits", json=fit_body(steps=2)).json()["id"]
    # the store filled up while the fit waited in the queue: the worker's settings see it full
    full = make_client(redis_url=redis_url, max_store_bytes=_used(client.store_root))
    assert run_job("fit", fit_id, worker(red, full.app.state.settings))["error"]
    body = client.get(f"/api/fits/{fit_id}").json()
    assert body["status"] == FAILED and "BASIN_MAX_STORE_BYTES" in body["error"], body
    assert body["control"] is None and body["runs"] == {}
    assert len(client.get("/api/checkpoints").json()) == 2  # nothing was added
