"""The runs API against the real stack: validation, health, cancel, delete, export, the
cross-run point cache and the write token."""

from __future__ import annotations

import json
import re
import time

import pytest
from fastapi.testclient import TestClient

from backend.app.main import create_app
from service.settings import Settings
from tests.integration.conftest import linear_spec, plane_spec, queue_unchecked

#: What the dashboard and CLI send on writes without a token (the CSRF guard wants it).
WRITE = {"X-Basin-Token": ""}


def test_health_lists_the_workers_and_their_devices(stack):
    body = stack.request("GET", "/api/health").json()
    assert body["ok"] is True and body["redis"]["ok"] is True
    alive = {w["name"]: w for w in body["workers"]}
    assert set(stack.live_worker_names) <= set(alive)
    assert all(alive[n]["device"] == "cpu" for n in stack.live_worker_names)


@pytest.mark.parametrize(
    ("spec", "status", "needle"),
    [
        (
            {"path": {"type": "spiral", "a": "ft_a", "b": "ft_b"}, "dataset": "eval.csv"},
            422,
            "unknown path type 'spiral'",
        ),
        (linear_spec(points=1), 422, "points"),
        (linear_spec(metrics=["perplexity"]), 422, "not available for task"),
        (
            {"path": {"type": "linear", "a": "ft_a", "b": "nope-ckpt"}, "dataset": "eval.csv"},
            422,
            "nope-ckpt",
        ),
        ({**linear_spec(), "dataset": "missing.csv"}, 422, "missing.csv"),
        (plane_spec(res=120), 422, "limit of 10000"),
        ([1, 2, 3], 422, ""),
    ],
    ids=[
        "bad-type",
        "too-few-points",
        "bad-metric",
        "unknown-checkpoint",
        "unknown-dataset",
        "too-many-points",
        "not-an-object",
    ],
)
def test_bad_specs_are_refused_with_the_reason_and_nothing_is_queued(stack, spec, status, needle):
    before = stack.redis().zcard("basin:runs")
    for path in ("/api/runs/validate", "/api/runs"):
        r = stack.request("POST", path, json=spec)
        assert r.status_code == status, r.text
        assert needle in str(r.json()["detail"])
    assert stack.redis().zcard("basin:runs") == before


def test_incompatible_checkpoints_name_the_tensors_unless_held(stack):
    spec = {
        "path": {"type": "linear", "a": "ft_a", "b": "wide", "points": 3},
        "dataset": "eval.csv",
        "max_examples": 16,
    }
    r = stack.request("POST", "/api/runs", json=spec)
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "IncompatibleCheckpoints"
    assert "classifier.weight" in body["detail"]
    assert {m["tensor"] for m in body["mismatches"]} == {"classifier.weight", "classifier.bias"}
    # the checkpoints are named as the user wrote them, not by their sha256 store ids
    assert "checkpoints 'ft_a' and 'wide' are incompatible" in body["detail"]
    assert all("wide" in m["reason"] and "ft_a" in m["reason"] for m in body["mismatches"])
    assert not re.search(r"[0-9a-f]{40}", r.text)
    short = stack.request("POST", "/api/runs/validate", json=spec).json()
    assert short["detail"] == body["detail"]  # validate says exactly the same

    ok = stack.request("POST", "/api/runs/validate", json={**spec, "on_mismatch": "hold"})
    assert ok.status_code == 200, ok.text
    assert ok.json()["num_points"] == 3
    run = stack.request("POST", "/api/runs", json={**spec, "on_mismatch": "hold"})
    assert run.status_code == 201
    assert stack.wait_run(run.json()["id"])["status"] == "done"


def test_validate_resolves_names_to_store_ids_and_queues_nothing(stack):
    before = stack.redis().zcard("basin:runs")
    r = stack.request("POST", "/api/runs/validate", json=plane_spec(res=5))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ok"] is True and body["num_points"] == 25
    assert len(body["spec"]["path"]["a"]) == 64 and body["spec"]["path"]["a"] != "ft_a"
    assert body["spec"]["metrics"] == ["loss", "accuracy"]  # defaults filled in
    assert stack.redis().zcard("basin:runs") == before


def test_list_export_and_delete(stack):
    run_id = stack.request("POST", "/api/runs", json=linear_spec(points=3, seed=21)).json()["id"]
    stack.wait_run(run_id)
    listed = stack.request("GET", "/api/runs").json()
    assert listed[0]["id"] == run_id  # newest first
    assert listed[0]["type"] == "linear" and listed[0]["done"] == listed[0]["total"] == 3
    assert listed[0]["status"] == "done"

    doc = stack.request("GET", f"/api/runs/{run_id}/export").json()
    assert [p["index"] for p in doc["points"]] == [0, 1, 2]  # sorted by index
    assert set(doc) >= {"spec", "points", "anchors", "summary", "timings"}
    assert doc["timings"]["device"] == "cpu"
    stored = stack.store / "runs" / f"{run_id}.json"
    assert stored.is_file()

    csv_rows = stack.request("GET", f"/api/runs/{run_id}/export?format=csv").text.splitlines()
    assert csv_rows[0] == "index,alpha,loss,accuracy,loss_lo,loss_hi,accuracy_lo,accuracy_hi"
    assert [row.split(",")[0] for row in csv_rows[1:]] == ["0", "1", "2"]
    assert float(csv_rows[2].split(",")[1]) == pytest.approx(0.5)

    assert stack.request("DELETE", f"/api/runs/{run_id}").status_code == 204
    assert stack.request("GET", f"/api/runs/{run_id}").status_code == 404
    assert stack.request("GET", f"/api/runs/{run_id}/points").status_code == 404
    assert not stored.exists()
    assert run_id not in {e["id"] for e in stack.request("GET", "/api/runs").json()}
    assert stack.request("DELETE", f"/api/runs/{run_id}").status_code == 404


def test_unknown_run_is_404_json(stack):
    for path in (
        "/api/runs/AAAAAAAAAAAAAAAAAAAAAA",
        "/api/runs/AAAAAAAAAAAAAAAAAAAAAA/points",
        "/api/runs/..%2F..%2Fetc/export",
    ):
        r = stack.request("GET", path)
        assert r.status_code == 404 and "detail" in r.json()


def slow_spec(points: int = 9, **kw) -> dict:
    """Points that take a noticeable time (1500 examples each)."""
    return {
        "path": {"type": "linear", "a": "ft_a", "b": "ft_c", "points": points},
        "dataset": "big.csv",
        "max_examples": 1500,
        "batch_size": 64,
        **kw,
    }


def test_cancel_stops_the_workers_and_keeps_the_points_so_far(stack):
    run_id = stack.request("POST", "/api/runs", json=slow_spec(points=41, seed=5)).json()["id"]
    stack.wait_run(run_id, until=("running",))
    deadline = time.monotonic() + 60
    while stack.request("GET", f"/api/runs/{run_id}").json()["done"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = stack.request("POST", f"/api/runs/{run_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    done_at_cancel = stack.request("GET", f"/api/runs/{run_id}").json()["done"]
    deadline = time.monotonic() + 30
    while True:  # the workers finish the point in hand (not recorded) and leave the run
        detail = stack.request("GET", f"/api/runs/{run_id}").json()
        if not detail["workers"]:
            break
        assert time.monotonic() < deadline, detail
        time.sleep(0.2)
    assert detail["status"] == "cancelled"
    assert detail["done"] == done_at_cancel  # the record script refuses late points
    assert 1 <= detail["done"] < 41
    time.sleep(1.5)
    assert stack.request("GET", f"/api/runs/{run_id}").json()["done"] == detail["done"]
    pts = stack.request("GET", f"/api/runs/{run_id}/points").json()
    assert len(pts["points"]) == detail["done"] and pts["status"] == "cancelled"
    assert stack.request("POST", f"/api/runs/{run_id}/cancel").status_code == 409
    # the cancelled run is stored like a done one: points so far, status, planned total
    doc = json.loads((stack.store / "runs" / f"{run_id}.json").read_text())
    assert doc["status"] == "cancelled" and doc["total"] == 41 and doc["error"] is None
    assert sorted(p["index"] for p in doc["points"]) == sorted(p["index"] for p in pts["points"])


def test_identical_points_are_computed_once_across_runs(stack):
    first = stack.request("POST", "/api/runs", json=linear_spec(points=3, seed=77)).json()["id"]
    a = stack.wait_run(first)
    assert a["evaluations"] == 3 and a["cached_points"] == 0
    # α ∈ {0, .25, .5, .75, 1}: 0, .5 and 1 were computed by the first run
    second = stack.request("POST", "/api/runs", json=linear_spec(points=5, seed=77)).json()["id"]
    b = stack.wait_run(second)
    assert b["status"] == "done" and b["cached_points"] == 3 and b["evaluations"] == 2
    pa = {p["index"]: p for p in stack.request("GET", f"/api/runs/{first}/points").json()["points"]}
    pb = {
        p["index"]: p for p in stack.request("GET", f"/api/runs/{second}/points").json()["points"]
    }
    for ia, ib in ((0, 0), (1, 2), (2, 4)):
        assert pb[ib]["coords"]["alpha"] == pa[ia]["coords"]["alpha"]
        assert pb[ib]["metrics"] == pa[ia]["metrics"]


def test_writes_need_the_token_when_one_is_set_reads_do_not(stack):
    settings = Settings(store=stack.store, redis_url=stack.redis_url, api_token="s3cret-token",
                        allowed_hosts="testserver")
    with TestClient(create_app(settings, with_ui=False)) as client:
        spec = linear_spec(points=3, seed=99)
        assert client.post("/api/runs", json=spec).status_code == 401
        assert (
            client.post("/api/runs", json=spec, headers={"X-Basin-Token": "wrong"}).status_code
            == 401
        )
        r = client.post("/api/runs", json=spec, headers={"Authorization": "Bearer s3cret-token"})
        assert r.status_code == 201
        run_id = r.json()["id"]
        assert client.get(f"/api/runs/{run_id}").status_code == 200  # the share link reads
        assert client.post(f"/api/runs/{run_id}/cancel").status_code == 401
        assert client.delete(f"/api/runs/{run_id}").status_code == 401
        assert stack.wait_run(run_id)["status"] == "done"  # real workers drained it
        assert (
            client.delete(
                f"/api/runs/{run_id}", headers={"X-Basin-Token": "s3cret-token"}
            ).status_code
            == 204
        )


def test_an_engine_error_fails_the_run_with_its_message(stack):
    # the API's Check refuses this scope as the worker would (issue 28: basin.precheck) ...
    r = stack.request("POST", "/api/runs", json=linear_spec(points=3, scope="^no_such_param$"))
    assert r.status_code == 422 and "no_such_param" in r.json()["detail"], r.text
    # ... a run queued without the API (as the fit worker queues its evaluations) still fails
    # in the worker, with the engine's message naming the checkpoints, never their ids
    run_id = queue_unchecked(stack, linear_spec(points=3, scope="^no_such_param$"))
    detail = stack.wait_run(run_id)
    assert detail["status"] == "failed"
    assert "scope" in detail["error"] and "no_such_param" in detail["error"]
    assert not re.search(r"\b[0-9a-f]{64}\b", detail["error"]), detail["error"]
    assert detail["done"] == 0
    doc = stack.wait_stored(run_id)
    assert doc["status"] == "failed" and doc["error"] == detail["error"] and doc["points"] == []
    # the workers are still alive and take the next run
    ok = stack.request("POST", "/api/runs", json=linear_spec(points=2, seed=31)).json()["id"]
    assert stack.wait_run(ok)["status"] == "done"


def test_trajectory_anchors_carry_the_training_step_of_each_checkpoint(stack, classifier_family):
    names = []
    for step in (10, 20, 30):
        name = f"traj-step{step}"
        r = stack.request("POST", "/api/checkpoints/register", json={
            "path": str(classifier_family[f"ft_a-step{step}"]), "name": name, "tags": {"step": step}})
        assert r.status_code in (200, 201), r.text
        names.append(name)
    spec = {"path": {"type": "trajectory", "checkpoints": [*names, "ft_a"], "resolution": [3, 3]},
            "dataset": "eval.csv", "max_examples": 16, "batch_size": 16}
    run = stack.request("POST", "/api/runs", json=spec)
    assert run.status_code == 201, run.text
    doc = stack.wait_run(run.json()["id"])
    assert doc["status"] == "done"
    anchors = stack.request("GET", f"/api/runs/{run.json()['id']}").json()["anchors"]
    # the figure labels the path with these steps; ft_a was registered without a step tag
    assert [(a["name"], a.get("step")) for a in anchors] == [
        ("traj-step10", 10), ("traj-step20", 20), ("traj-step30", 30), ("ft_a", None)]


def test_every_status_of_the_error_table_answers_the_one_error_body(stack):
    from backend.app.api.errors import STATUS

    settings = Settings(store=stack.store, redis_url=stack.redis_url, max_upload_bytes=1000,
                        allowed_hosts="testserver")
    seen: set[int] = set()
    with TestClient(create_app(settings, with_ui=False), headers=WRITE) as client:
        done = client.post("/api/runs", json=linear_spec(points=2, seed=123)).json()["id"]
        assert stack.wait_run(done)["status"] == "done"
        cases = [
            ("GET", "/api/runs/AAAAAAAAAAAAAAAAAAAAAA", {}, 404, "RunNotFound",
             "no run with id 'AAAAAAAAAAAAAAAAAAAAAA'"),
            ("POST", "/api/runs", {"json": linear_spec(points=1)}, 422, "InvalidSpec",
             "invalid spec: "),
            ("POST", "/api/runs", {"json": {**linear_spec(), "dataset": "missing.csv"}}, 422,
             "UnknownReference", "missing.csv"),
            ("POST", f"/api/runs/{done}/cancel", {}, 409, "RunConflict", "already done"),
            ("PUT", "/api/checkpoints", {"params": {"name": "x"}, "content": b"\0" * 2000}, 413,
             "PayloadTooLarge", "limit is 1000 bytes"),
        ]
        for method, path, kw, status, error, needle in cases:
            r = client.request(method, path, **kw)
            assert r.status_code == status, (path, r.text)
            assert set(r.json()) == {"detail", "error"}, r.text
            assert r.json()["error"] == error and needle in r.json()["detail"], r.text
            seen.add(status)
    down = Settings(store=stack.store, redis_url="redis://127.0.0.1:1/0", allowed_hosts="testserver")
    with TestClient(create_app(down, with_ui=False)) as client:
        r = client.get(f"/api/runs/{done}")
        assert r.status_code == 503 and r.json()["error"] == "ConnectionError"
        assert r.json()["detail"].startswith("Redis is unreachable")
        seen.add(503)
    assert seen == set(STATUS.values())


def test_the_typed_answers_keep_every_field(stack):
    run_id = stack.request("POST", "/api/runs", json=linear_spec(points=3, seed=124)).json()["id"]
    stack.wait_run(run_id)
    detail = stack.request("GET", f"/api/runs/{run_id}").json()
    assert list(detail) == [
        "id", "url", "spec", "type", "checkpoints", "dataset", "name", "names", "status",
        "done", "total", "progress", "eta_s", "created", "started", "finished", "summary",
        "anchors", "error", "workers", "warning", "evaluations", "cached_points", "requeued",
        "tags", "labels", "timings", "source", "estimate", "queue",
    ]
    assert detail["anchors"][0]["name"] == "ft_a" and detail["summary"]
    page = stack.request("GET", f"/api/runs/{run_id}/points").json()
    assert list(page) == ["points", "cursor", "status", "done", "total", "eta_s", "workers", "warning",
                          "error"]
    # each point's view; the 1D run's barrier columns (bootstrap) stay in the export
    assert set(page["points"][0]) == {"index", "coords", "metrics", "intervals"}
    exported = stack.request("GET", f"/api/runs/{run_id}/export").json()
    assert exported["schema_version"] == 1 and all("bootstrap" in p for p in exported["points"])
    listed = next(e for e in stack.request("GET", "/api/runs").json() if e["id"] == run_id)
    assert list(listed) == [
        "id", "url", "spec", "type", "checkpoints", "dataset", "name", "names", "status",
        "created", "done", "total", "error",
    ]
    # a Redis cursor on a run now served from its document: every point, and reset
    stack.redis().delete(f"basin:run:{run_id}")
    stale = stack.request("GET", f"/api/runs/{run_id}/points", params={"after": "1-0"}).json()
    assert stale["reset"] is True and stale["cursor"] == "store" and len(stale["points"]) == 3
    assert stack.request("GET", f"/api/runs/{run_id}").json()["source"] == "store"


def test_a_run_records_its_checkpoints_names_and_tags_whichever_reference_made_it(stack):
    """The dashboard's form posts store ids; the CLI and scripts post names or id prefixes.
    Each run's detail and stored document name the checkpoints and dataset the same way."""
    ids = {m["name"]: m["id"] for m in stack.request("GET", "/api/checkpoints").json()}
    data = next(d["id"] for d in stack.request("GET", "/api/datasets").json() if d["name"] == "eval.csv")
    ways = {"names": ("ft_a", "ft_b", "eval.csv"), "ids": (ids["ft_a"], ids["ft_b"], data),
            "prefixes": (ids["ft_a"][:12], ids["ft_b"][:12], data[:12])}
    for seed, (a, b, d) in enumerate(ways.values(), start=301):
        spec = {**linear_spec(points=3, seed=seed), "path": {"type": "linear", "a": a, "b": b, "points": 3},
                "dataset": d}
        r = stack.request("POST", "/api/runs", json=spec)
        assert r.status_code == 201, r.text
        run_id = r.json()["id"]
        stack.wait_run(run_id)
        want = {ids["ft_a"]: "ft_a", ids["ft_b"]: "ft_b", data: "eval.csv"}
        detail = stack.request("GET", f"/api/runs/{run_id}").json()
        assert detail["names"] == want
        assert detail["tags"] == {ids["ft_a"]: {"task": "sentiment"}, ids["ft_b"]: {"task": "sentiment"}}
        assert detail["labels"] == want  # what a page calls them now (no store listing needed)
        doc = stack.wait_stored(run_id)  # written just after the run says done
        assert doc["names"] == want and doc["tags"] == detail["tags"]
    # renamed since: the detail's labels say the name now, its names the name when it was made
    assert stack.request("PATCH", f"/api/checkpoints/{ids['ft_b']}", json={"name": "ft_b-now"}).status_code == 200
    try:
        detail = stack.request("GET", f"/api/runs/{run_id}").json()
        assert detail["labels"][ids["ft_b"]] == "ft_b-now" and detail["names"][ids["ft_b"]] == "ft_b"
    finally:
        stack.request("PATCH", f"/api/checkpoints/{ids['ft_b']}", json={"name": "ft_b"})
