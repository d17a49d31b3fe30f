"""Studies through the real stack (issue 26): the pairs run as ordinary runs on both workers,
the study advances phase by phase, a worker killed inside a point of a study's run loses
nothing (held there by the seam, not timed), each checkpoint's own point is evaluated once
(the point cache), the matrix equals the in-process study's, cancel stops every run."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from basin.resolve import FileResolver
from basin.study.run import run_study
from service.store import Store
from tests.core.test_study import study_spec
from tests.stack import running_stack


@pytest.fixture(scope="module")
def study_stack(tmp_path_factory, study_family):
    root = tmp_path_factory.mktemp("studies") / "store"
    store = Store(root)
    for name, tags in (
        ("seed_a", {"seed": 1, "family": "tiny"}),
        ("seed_b", {"seed": 2, "family": "tiny"}),
        ("permuted", {"seed": 1, "family": "tiny", "method": "permuted"}),
    ):
        store.add_checkpoint_dir(study_family[name], name=name, tags=tags)
    store.add_dataset(study_family["data"], name="study.csv")
    with running_stack(root, workers=2, lease_seconds=3, ui=False, seam=root.parent / "seam") as s:
        yield s


def body(**kw):
    b = {
        "name": "tiny study",
        "where": {"family": "tiny"},
        "dataset": "study.csv",
        "max_examples": 256,
        "batch_size": 64,
    }
    b.update(kw)
    return b


def wait_study(stack, study_id, until=("done", "failed", "cancelled"), timeout=600.0):
    end = time.monotonic() + timeout  # a hang limit, not a speed limit
    while time.monotonic() < end:
        d = stack.request("GET", f"/api/studies/{study_id}").json()
        if d.get("status") in until:
            return d
        time.sleep(0.2)
    raise AssertionError(f"study {study_id} not {until}: {d}\n{stack.log('worker0')}")


def first_run(stack, study_id):
    end = time.monotonic() + 120
    while time.monotonic() < end:
        runs = stack.request("GET", f"/api/studies/{study_id}").json()["runs"]
        if runs:
            return next(iter(runs.values()))
        time.sleep(0.05)
    raise AssertionError("the study queued no run")


def test_cancel_stops_every_run(study_stack):
    seam = study_stack.seam
    hold = seam.hold()  # every worker, every moment
    r = study_stack.request("POST", "/api/studies", json=body(name="to cancel"))
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    run = first_run(study_stack, sid)
    seam.wait(study_stack, run)
    c = study_stack.request("POST", f"/api/studies/{sid}/cancel")
    assert c.status_code == 200 and c.json()["status"] == "cancelled"
    seam.unhold(hold)
    seam.release(run)
    d = wait_study(study_stack, sid)
    assert d["status"] == "cancelled"
    assert study_stack.wait_run(run)["status"] == "cancelled"
    assert study_stack.request("POST", f"/api/studies/{sid}/cancel").status_code == 409


def test_study_survives_a_killed_worker_and_matches_the_in_process_study(study_stack, study_family):
    seam = study_stack.seam
    hold = seam.hold("any", 8)  # α = 1/3, a coarse point of every pair
    r = study_stack.request(
        "POST", "/api/studies", json=body(seed=1)
    )  # keys of its own: no cache from other tests
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["url"].endswith(f"/studies/{sid}")
    run = first_run(study_stack, sid)
    _, worker = seam.wait(study_stack, run, 8)
    study_stack.kill_worker(
        study_stack.worker_index(worker)
    )  # inside the point: its lease must expire
    seam.unhold(hold)
    d = wait_study(study_stack, sid)
    assert d["status"] == "done", d.get("error")
    res = d["result"]
    names = {tuple(sorted(c["names"])) for c in res["clusters"]}
    assert names == {("permuted",), ("seed_a", "seed_b")}, res["clusters"]
    # the same pairs, points and barriers as the study in one process (the where order is the store's)
    order = [c["name"] for c in res["checkpoints"]]
    refs = {
        "seed_a": study_family["seed_a"],
        "seed_b": study_family["seed_b"],
        "permuted": study_family["permuted"],
    }
    local = run_study(
        study_spec(study_family, checkpoints=[str(refs[n]) for n in order], seed=1),
        FileResolver(),
        progress=False,
    )
    for p, q in zip(res["pairs"], local["pairs"], strict=True):
        assert (p["a"], p["b"], p["points"]) == (q["a"], q["b"], q["points"])
        for m in p["barrier"]:
            assert p["barrier"][m]["value"] == pytest.approx(q["barrier"][m]["value"], abs=1e-5)
            assert p["barrier"][m]["verdict"] == q["barrier"][m]["verdict"]
        # a cell opens its run, whose own summary says the same
        run_doc = study_stack.request("GET", f"/api/runs/{p['run']}").json()
        assert run_doc["summary"]["barrier"]["loss"]["value"] == p["barrier"]["loss"]["value"]
    # each checkpoint's own point evaluated once: 3 pairs × 2 ends = 6 records, 3 from the cache
    ev = res["evaluations"]
    rr = study_stack.redis()
    counts = [
        rr.hmget(f"basin:run:{p['run']}", ["evaluations", "cached", "done", "status"])
        for p in res["pairs"]
    ]
    assert ev["reused"] == 3, (ev, counts, d["runs"])
    assert ev["performed"] == sum(p["points"] for p in res["pairs"]) - 3
    assert seam.arrived(run, 8)  # the killed worker's point was evaluated again by the other
    # export and list
    rows = list(
        csv.DictReader(
            io.StringIO(
                study_stack.request(
                    "GET", f"/api/studies/{sid}/export", params={"table": "matrix"}
                ).text
            )
        )
    )
    assert len(rows) == 6 and all(row["run"] for row in rows)
    assert (
        study_stack.request("GET", f"/api/studies/{sid}/export").json()["clusters"]
        == res["clusters"]
    )
    listed = {s["id"]: s for s in study_stack.request("GET", "/api/studies").json()}
    assert listed[sid]["status"] == "done" and listed[sid]["checkpoints"] == 3


def test_bad_studies_are_refused_with_what_is_wrong(study_stack):
    r = study_stack.request(
        "POST", "/api/studies", json={"checkpoints": ["seed_a"], "dataset": "study.csv"}
    )
    assert r.status_code == 422 and "at least 2" in r.text
    r = study_stack.request(
        "POST", "/api/studies", json=body(where=None, checkpoints=["seed_a", "nope"])
    )
    assert r.status_code == 422 and "nope" in r.text
    r = study_stack.request("POST", "/api/studies", json=body(where={"family": "no such family"}))
    assert r.status_code == 422 and "at least 2" in r.text
    r = study_stack.request("POST", "/api/studies", json=body(max_examples=10**6))
    assert r.status_code == 422 and "BASIN_MAX_EXAMPLES" in r.text, r.text
    assert Path(study_stack.store).exists()
