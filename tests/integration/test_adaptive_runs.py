"""Adaptive refinement through the real stack (two Celery workers, Redis, the API): the
service evaluates wave after wave, each chosen by the worker that holds the finish lock
once the previous wave is recorded, and ends with the same points and values as the
engine in-process (``basin eval``)."""

from __future__ import annotations

from tests.integration.conftest import linear_spec, plane_spec
from tests.integration.test_stream_and_persistence import assert_same_metrics, engine_result


def test_adaptive_runs_choose_the_same_points_as_the_engine(stack, store_root):
    specs = [
        linear_spec(points=17, refine={"budget": 9, "levels": 2, "wave": 2}),  # coarse 5, then 2 waves of 2
        plane_spec(res=5, refine={"budget": 14, "levels": 1}),  # coarse 3 × 3, then one cell (5 points)
    ]
    ids = []
    for spec in specs:
        r = stack.request("POST", "/api/runs", json=spec)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    for run_id, budget in zip(ids, (9, 14), strict=True):
        detail = stack.wait_run(run_id)
        assert detail["status"] == "done", detail.get("error")
        points = stack.request("GET", f"/api/runs/{run_id}/points").json()["points"]
        assert len(points) <= budget and detail["total"] == detail["done"] == len(points)
        doc = engine_result(store_root, detail["spec"])
        assert_same_metrics(points, doc)  # the same indices and values as in-process
        stored = stack.wait_stored(run_id)
        assert sorted(p["index"] for p in stored["points"]) == sorted(p["index"] for p in points)
        if detail["spec"]["path"]["type"] == "linear":
            assert len(points) == 9
            assert detail["summary"]["barrier"]["loss"]["value"] == doc["summary"]["barrier"]["loss"]["value"]
