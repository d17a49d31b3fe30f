"""Intervals, per-example results and forgetting through the real stack: API → worker → Redis →
stored document → ``GET /api/runs/{id}/forgetting``."""

from __future__ import annotations

import csv
import io

from tests.integration.conftest import linear_spec


def test_a_per_example_run_stores_intervals_examples_and_a_barrier_interval(stack):
    r = stack.request("POST", "/api/runs", json=linear_spec(
        path={"type": "linear", "a": "init", "b": "ft_a", "points": 5}, per_example=True))
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    assert stack.wait_run(run_id)["status"] == "done"
    live = stack.request("GET", f"/api/runs/{run_id}/points").json()["points"]
    # /points serves views: intervals, not the per-example columns (those are in the export)
    assert all(set(p["intervals"]) == {"loss", "accuracy"} and "examples" not in p for p in live)
    exported = stack.request("GET", f"/api/runs/{run_id}/export").json()["points"]
    assert all(len(p["examples"]["correct"]) == 32 for p in exported)
    doc = stack.wait_stored(run_id)
    for p in doc["points"]:
        lo, hi = p["intervals"]["accuracy"]
        assert lo <= p["metrics"]["accuracy"] <= hi
    export = list(csv.DictReader(io.StringIO(stack.request("GET", f"/api/runs/{run_id}/export?format=csv").text)))
    assert [float(r["accuracy_lo"]) for r in export] == [p["intervals"]["accuracy"][0] for p in doc["points"]]
    b = doc["summary"]["barrier"]["loss"]  # the finisher resampled the stored records
    assert b["ci"][0] <= b["value"] <= b["ci"][1]

    table = stack.request("GET", f"/api/runs/{run_id}/forgetting").json()
    start = next(p for p in doc["points"] if p["coords"]["alpha"] == 0.0)["examples"]["correct"]
    assert table["counts"]["correct_at_start"] == sum(start) == len(table["rows"])
    assert all(r["text"] for r in table["rows"])  # texts from the stored dataset
    res = stack.request("GET", f"/api/runs/{run_id}/forgetting?format=csv")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(res.text)))
    assert [r["text"] for r in rows] == [r["text"] for r in table["rows"]]


def test_forgetting_of_a_run_without_per_example_results_says_what_to_change(stack):
    run_id = stack.request("POST", "/api/runs", json=linear_spec(points=3)).json()["id"]
    stack.wait_run(run_id)
    doc = stack.wait_stored(run_id)
    assert all("intervals" in p and "examples" not in p for p in doc["points"])  # intervals always
    res = stack.request("GET", f"/api/runs/{run_id}/forgetting")
    assert res.status_code == 422 and "per_example: true" in res.json()["detail"]


def test_a_run_without_per_example_results_still_gets_its_barrier_interval(stack):
    spec = linear_spec(path={"type": "linear", "a": "init", "b": "ft_a", "points": 5}, seed=7)
    plain = stack.request("POST", "/api/runs", json=spec).json()["id"]
    kept = stack.request("POST", "/api/runs", json={**spec, "per_example": True}).json()["id"]
    assert stack.wait_run(plain)["status"] == "done" and stack.wait_run(kept)["status"] == "done"
    detail = stack.request("GET", f"/api/runs/{plain}").json()
    doc = stack.wait_stored(plain)
    assert all("examples" not in p and p["bootstrap"]["n"] == 32 for p in doc["points"])
    for m in ("loss", "accuracy"):  # the same examples and seed: the same interval as per_example's
        b = detail["summary"]["barrier"][m]
        assert b["ci"][0] <= b["value"] <= b["ci"][1]
        assert b["ci"] == doc["summary"]["barrier"][m]["ci"]
        want = stack.request("GET", f"/api/runs/{kept}").json()["summary"]["barrier"][m]["ci"]
        assert abs(b["ci"][0] - want[0]) < 1e-6 and abs(b["ci"][1] - want[1]) < 1e-6
