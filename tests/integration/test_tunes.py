"""Tune jobs through the real stack (redis-server, two Celery workers, uvicorn; issue 25).

A family of a tiny BERT classifier, 2 seeds × {full, LoRA}, 6 steps with a checkpoint every
2: each member is one worker task; the worker running member 0 is SIGKILLed while it is
held at step 3 (the worker hook: an exact moment, not a sleep); the reaper re-queues the
member, the other worker trains it again and it ends once — one checkpoint per member and
step in the store, each tagged with what made it. Then a trajectory run takes that member's
steps by tag; a cancelled family stops its running member and ends its queued ones; caps
are refused with messages that name them.

Synchronised on events (the seam's arrival files, the API's statuses); the limits in the
loops only stop a hung test.
"""

from __future__ import annotations

import time

import pytest

from basin.data import read_rows, subsample
from basin.tune.cartography import read_map
from service.store import Store
from tests.stack import running_stack

FAMILY = {
    "base": "init",
    "dataset": "eval.csv",
    "family": "fam",
    "seeds": [0, 1],
    "methods": [{"name": "full"}, {"name": "lora", "learning_rates": [0.01]}],
    "learning_rates": [0.005],
    "steps": 6,
    "save_every": 2,
    "batch_size": 8,
    "max_examples": 48,
    "max_length": 16,
    "cartography": True,
    "device": "cpu",
}


@pytest.fixture(scope="module")
def tstack(store_root, tmp_path_factory):
    """A stack of its own (one of its workers is killed): two workers, the seam, short leases
    and a 1 s lost-task grace, at most 6 members a family."""
    import shutil

    base = tmp_path_factory.mktemp("tunes")
    dst = base / "store"
    shutil.copytree(store_root, dst, ignore=shutil.ignore_patterns("runs", "tmp"))
    env = {"BASIN_LOST_TASK_GRACE_SECONDS": "1", "BASIN_MAX_TUNE_MEMBERS": "6"}
    with running_stack(dst, workers=2, lease_seconds=3, ui=False, seam=base / "seam", env=env) as s:
        yield s


def wait_tune(
    stack, tune_id: str, until=("done", "failed", "cancelled"), limit: float = 600.0
) -> dict:
    end = time.monotonic() + limit
    while True:
        body = stack.request("GET", f"/api/tunes/{tune_id}").json()
        if body.get("status") in until:
            return body
        assert time.monotonic() < end, (body, stack.log("worker0"), stack.log("worker1"))
        time.sleep(0.1)


def stored(stack, tune_id: str) -> list[dict]:
    return [
        m
        for m in Store(stack.store).list_checkpoints()
        if (m.get("tags") or {}).get("tune") == tune_id
    ]


def test_a_family_trains_on_two_workers_and_a_killed_members_worker_is_requeued_and_finishes_once(
    tstack,
):
    seam = tstack.seam
    hold = seam.hold("any", 3)  # every member stops at its step 3 until released
    r = tstack.request("POST", "/api/tunes", json=FAMILY)
    assert r.status_code == 201, r.text
    tune_id = r.json()["id"]
    assert r.json()["members"] == 4
    _, victim = seam.wait(tstack, f"{tune_id}.0", 3)  # member 0 is at step 3 on `victim`
    live = tstack.request("GET", f"/api/tunes/{tune_id}").json()
    m0 = live["member_list"][0]
    assert live["status"] == "running" and m0["status"] == "running" and m0["worker"] == victim
    assert [p["step"] for p in m0["losses"]] == [1, 2]  # its live loss, step by step
    assert [c["step"] for c in m0["checkpoints"] if not c.get("init")] == [
        2
    ]  # step 2 already stored
    tstack.kill_worker(tstack.worker_index(victim))
    seam.unhold(hold)

    body = wait_tune(tstack, tune_id)
    assert body["status"] == "done", body
    members = body["member_list"]
    assert [m["status"] for m in members] == ["done"] * 4
    m0 = members[0]
    assert m0["attempt"] == 2 and m0["lost_worker"] == victim and m0["worker"] != victim
    assert [a[1] for a in seam.arrived(f"{tune_id}.0", 3)] == [victim, m0["worker"]]
    assert [m["attempt"] for m in members[1:]] == [1, 1, 1]
    assert [p["step"] for p in m0["losses"]] == [1, 2, 3, 4, 5, 6]  # the new attempt's log only

    ckpts = stored(tstack, tune_id)
    by_member: dict[int, list[int]] = {}
    for c in ckpts:
        t = c["tags"]
        if t.get("method") == "init":
            continue
        by_member.setdefault(t["member"], []).append(t["step"])
        assert t["family"] == "fam" and t["trained_on"] and t["order"] == t["seed"]
    # one checkpoint per member and step — member 0's dead attempt left no second copy
    assert {i: sorted(s) for i, s in by_member.items()} == {i: [2, 4, 6] for i in range(4)}
    finals = [c for c in ckpts if c["tags"].get("final")]
    assert sorted((c["tags"]["method"], c["tags"]["seed"]) for c in finals) == [
        ("full", 0),
        ("full", 1),
        ("lora", 0),
        ("lora", 1),
    ]
    for m in members:
        final = next(c for c in finals if c["tags"]["member"] == m["index"])
        assert m["final"] == final["id"]
        acc = m["metrics"]["accuracy"]
        assert 0.0 <= acc <= 1.0 and final["tags"]["heldout_accuracy"] == acc
        assert (tstack.store / "checkpoints" / final["id"] / "cartography.csv").is_file()
        assert final["tags"]["lr"] == (0.005 if m["tags"]["method"] == "full" else 0.01)
    lora = [c for c in finals if c["tags"]["method"] == "lora"]
    assert all(c.get("adapter") for c in lora)  # PEFT members are adapters on their seed's θ0

    # the trajectory path takes member 0's steps by tag
    sel = {"tags": {"tune": tune_id, "member": 0}}
    run = tstack.request(
        "POST",
        "/api/runs",
        json={
            "path": {"type": "trajectory", "checkpoints": sel, "resolution": [3, 3]},
            "dataset": "eval.csv",
            "max_examples": 16,
            "batch_size": 16,
        },
    )
    assert run.status_code == 201, run.text
    done = tstack.wait_run(run.json()["id"])
    assert done["status"] == "done", done
    anchors = [a["id"] for a in done["anchors"]]
    want = [
        c["id"]
        for c in sorted(
            (c for c in ckpts if c["tags"].get("member") == 0), key=lambda c: c["tags"]["step"]
        )
    ]
    assert anchors == want and len(want) == 3

    # a selection that names several members is refused, saying so
    bad = tstack.request(
        "POST",
        "/api/runs",
        json={
            "path": {"type": "trajectory", "checkpoints": {"tags": {"tune": tune_id, "seed": 0}}},
            "dataset": "eval.csv",
            "max_examples": 16,
        },
    )
    assert bad.status_code == 422 and "match two checkpoints at step" in bad.text

    # a run between two members' finals: its forgetting table joined with θA's cartography
    fa, fb = members[0]["final"], members[1]["final"]
    line = tstack.request(
        "POST",
        "/api/runs",
        json={
            "path": {"type": "linear", "a": fa, "b": fb, "points": 5},
            "dataset": "eval.csv",
            "max_examples": 32,
            "batch_size": 32,
            "per_example": True,
        },
    )
    assert line.status_code == 201, line.text
    assert tstack.wait_run(line.json()["id"])["status"] == "done"
    joined = tstack.request("GET", f"/api/runs/{line.json()['id']}/cartography").json()
    assert joined["checkpoint"] == fa and joined["role"] == "a" and joined["examples"] > 0
    carto = {c["row"]: c for c in read_map(tstack.store / "checkpoints" / fa / "cartography.csv")}
    _, file = read_rows(Store(tstack.store).resolver().dataset("eval.csv"))
    evaluated = subsample(len(file), 32, 0)  # the run's examples, as rows of the file
    forgetting = tstack.request("GET", f"/api/runs/{line.json()['id']}/forgetting").json()["rows"]
    want = [evaluated[r["index"]] for r in forgetting if evaluated[r["index"]] in carto]
    assert [r["file_row"] for r in joined["rows"]] == want and joined["matched"] == len(want) > 0
    for row in joined["rows"]:
        assert row["confidence"] == carto[row["file_row"]]["confidence"]
        assert row["variability"] == carto[row["file_row"]]["variability"]

    listed = {t["id"]: t for t in tstack.request("GET", "/api/tunes").json()}
    assert listed[tune_id]["done_members"] == 4 and listed[tune_id]["status"] == "done"


def test_cancel_stops_the_running_member_and_ends_the_queued_ones(tstack):
    if len(tstack.live_worker_names) < 2:
        tstack.start_worker()
    seam = tstack.seam
    hold = seam.hold("any", 2)
    r = tstack.request(
        "POST", "/api/tunes", json={**FAMILY, "seeds": [0, 1, 2], "methods": [{"name": "full"}]}
    )
    tune_id = r.json()["id"]
    seam.wait(tstack, f"{tune_id}.0", 2)
    c = tstack.request("POST", f"/api/tunes/{tune_id}/cancel")
    assert c.status_code == 200 and c.json()["status"] == "cancelled"
    seam.unhold(hold)
    body = wait_tune(tstack, tune_id, until=("cancelled",))
    end = time.monotonic() + 300
    while any(
        m["status"] == "running" for m in body["member_list"]
    ):  # running members stop at their next step
        assert time.monotonic() < end, body
        time.sleep(0.1)
        body = tstack.request("GET", f"/api/tunes/{tune_id}").json()
    assert {m["status"] for m in body["member_list"]} == {"cancelled"}
    assert body["member_list"][0]["step"] == 2  # stopped right after the step it was held at
    assert not [m for m in stored(tstack, tune_id) if m["tags"].get("final")]  # no final checkpoint
    again = tstack.request("POST", f"/api/tunes/{tune_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.text


def test_caps_and_bad_references_are_refused_naming_them_and_nothing_is_queued(tstack):
    before = tstack.request("GET", "/api/tunes").json()
    over = tstack.request(
        "POST", "/api/tunes", json={**FAMILY, "steps": 200_000, "seeds": list(range(4))}
    )
    assert over.status_code == 422
    text = over.json()["detail"] if isinstance(over.json().get("detail"), str) else over.text
    assert "steps: 200000 is over this server's limit of 100000 (BASIN_MAX_TRAIN_STEPS)" in text
    assert "the family has 8 members" in text and "limit of 6 (BASIN_MAX_TUNE_MEMBERS)" in text
    missing = tstack.request("POST", "/api/tunes", json={**FAMILY, "base": "no-such-checkpoint"})
    assert missing.status_code == 422 and "no-such-checkpoint" in missing.text
    yaml_bad = tstack.request(
        "POST",
        "/api/tunes",
        content=b"base: [unclosed",
        headers={"Content-Type": "application/yaml"},
    )
    assert yaml_bad.status_code == 422 and "not YAML" in yaml_bad.text
    method = tstack.request(
        "POST", "/api/tunes", json={**FAMILY, "methods": [{"name": "full", "r": 4}]}
    )
    assert method.status_code == 422 and "method full trains every parameter" in method.text
    assert tstack.request("GET", "/api/tunes").json() == before
