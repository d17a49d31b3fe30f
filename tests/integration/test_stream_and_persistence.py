"""One worker, one private stack: points arrive coarse-to-fine through ``/points`` and ``/events``,
equal what the engine computes in-process, and finished runs outlive a Redis flush."""

from __future__ import annotations

import json

import httpx
import pytest

from basin import engine, grid
from basin.spec import parse_spec
from service.store import Store
from tests.integration.conftest import linear_spec, plane_spec
from tests.stack import running_stack


@pytest.fixture(scope="module")
def solo(store_root, tmp_path_factory):
    """A stack with ONE worker (so the recorded order is exactly the lease order)."""
    import shutil

    dst = tmp_path_factory.mktemp("solo") / "store"
    shutil.copytree(store_root, dst, ignore=shutil.ignore_patterns("runs", "tmp"))
    with running_stack(dst, workers=1, lease_seconds=3, ui=False) as s:
        yield s


def poll_points(stack, run_id: str, timeout: float = 90) -> tuple[list[dict], list[dict]]:
    """Follow ``/points?after=cursor`` like the dashboard until the run ends: (points, answers)."""
    import time

    got, answers, cursor = [], [], None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        params = {"after": cursor} if cursor else {}
        body = stack.request("GET", f"/api/runs/{run_id}/points", params=params).json()
        answers.append(body)
        got += body["points"]
        cursor = body["cursor"]
        if body["status"] in ("done", "failed", "cancelled"):
            return got, answers
        time.sleep(0.1)
    raise TimeoutError(f"run {run_id} did not finish: {answers[-1]}")


def read_events(
    url: str, headers: dict | None = None, stop_after: int | None = None
) -> list[tuple[str | None, str, dict]]:
    """Parse an SSE stream into ``(id, event, data)`` until ``end`` (or ``stop_after`` points)."""
    events: list[tuple[str | None, str, dict]] = []
    with httpx.stream("GET", url, headers=headers or {}, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        ev_id, ev, data = None, "message", None
        for line in r.iter_lines():
            if line.startswith("id: "):
                ev_id = line[4:]
            elif line.startswith("event: "):
                ev = line[7:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                events.append((ev_id, ev, data))
                if ev == "end":
                    break
                if stop_after is not None and sum(e[1] == "point" for e in events) >= stop_after:
                    break
                ev_id, ev, data = None, "message", None
    return events


def engine_result(store_root, resolved_spec: dict) -> dict:
    """The same spec run in-process by the engine (what ``basin eval`` computes)."""
    return engine.run(parse_spec(resolved_spec), Store(store_root).resolver(), progress=False)


def assert_same_metrics(service_points: list[dict], doc: dict) -> None:
    ref = {p["index"]: p for p in doc["points"]}
    assert sorted(p["index"] for p in service_points) == sorted(ref)
    for p in service_points:
        r = ref[p["index"]]
        assert p["coords"] == pytest.approx(r["coords"], abs=1e-9)
        for m, v in r["metrics"].items():
            assert abs(p["metrics"][m] - v) <= 1e-5, (p["index"], m, p["metrics"][m], v)


def test_linear_run_streams_coarse_to_fine_and_matches_the_engine(solo, store_root):
    r = solo.request("POST", "/api/runs", json=linear_spec(points=9))
    assert r.status_code == 201, r.text
    run_id, url = r.json()["id"], r.json()["url"]
    assert url == f"/runs/{run_id}" and len(run_id) >= 22  # 16 random bytes, base64url

    points, answers = poll_points(solo, run_id)
    assert [p["index"] for p in points] == grid.order_1d(9)  # endpoints, midpoint, quarters...
    assert answers[-1]["done"] == answers[-1]["total"] == 9

    detail = solo.request("GET", f"/api/runs/{run_id}").json()
    assert detail["status"] == "done" and detail["eta_s"] == 0.0
    assert [a["name"] for a in detail["anchors"]] == ["ft_a", "ft_b"]  # names as written
    assert "barrier" in detail["summary"] and "loss" in detail["summary"]["barrier"]
    assert detail["evaluations"] == 9

    doc = engine_result(store_root, detail["spec"])
    assert_same_metrics(points, doc)
    assert detail["summary"]["barrier"]["loss"]["value"] == pytest.approx(
        doc["summary"]["barrier"]["loss"]["value"], abs=1e-5
    )

    # the SSE stream of a finished run replays every point in the same order, then ends
    events = read_events(f"{solo.base_url}/api/runs/{run_id}/events")
    assert [e[2]["index"] for e in events if e[1] == "point"] == grid.order_1d(9)
    assert events[-1][1] == "end" and events[-1][2]["status"] == "done"
    # each point's view, as /points serves it; the barrier's columns are in the export
    assert all(set(e[2]) == {"index", "coords", "metrics", "intervals"} for e in events if e[1] == "point")
    assert all("bootstrap" in p for p in solo.request("GET", f"/api/runs/{run_id}/export").json()["points"])


def test_plane_run_over_sse_with_resume(solo, store_root):
    r = solo.request("POST", "/api/runs", json=plane_spec(res=4))
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    url = f"{solo.base_url}/api/runs/{run_id}/events"

    first = read_events(url, stop_after=3)  # live: the run is still going
    first_pts = [e for e in first if e[1] == "point"]
    assert len(first_pts) == 3
    rest = read_events(url, headers={"Last-Event-ID": first_pts[-1][0]})
    assert rest[-1][1] == "end" and rest[-1][2]["status"] == "done"
    rest_pts = [e for e in rest if e[1] == "point"]

    order = [e[2]["index"] for e in first_pts + rest_pts]
    assert order == grid.order_2d(4, 4)  # corners first, successive halving, none twice
    detail = solo.wait_run(run_id)
    assert detail["status"] == "done" and detail["done"] == 16
    assert {a["name"] for a in detail["anchors"]} == {"ft_a", "ft_b", "ft_c"}
    doc = engine_result(store_root, detail["spec"])
    assert_same_metrics([e[2] for e in first_pts + rest_pts], doc)


def test_finished_run_is_served_from_the_store_after_redis_is_flushed(solo):
    r = solo.request("POST", "/api/runs", json=linear_spec(points=5, seed=3))
    run_id = r.json()["id"]
    before = solo.wait_run(run_id)
    assert before["status"] == "done" and before["source"] == "redis"
    pts_before = solo.request("GET", f"/api/runs/{run_id}/points").json()["points"]
    cursor = solo.request("GET", f"/api/runs/{run_id}/points").json()["cursor"]

    solo.flush_redis()
    assert solo.redis().exists(f"basin:run:{run_id}") == 0

    after = solo.request("GET", f"/api/runs/{run_id}").json()
    assert after["source"] == "store" and after["status"] == "done"
    assert after["done"] == after["total"] == 5
    assert after["summary"] == before["summary"]
    assert [a["name"] for a in after["anchors"]] == ["ft_a", "ft_b"]

    body = solo.request("GET", f"/api/runs/{run_id}/points").json()
    assert sorted(body["points"], key=lambda p: p["index"]) == sorted(
        pts_before, key=lambda p: p["index"]
    )
    assert body["status"] == "done" and body["cursor"] == "store"
    assert (
        solo.request("GET", f"/api/runs/{run_id}/points", params={"after": "store"}).json()[
            "points"
        ]
        == []
    )
    stale = solo.request("GET", f"/api/runs/{run_id}/points", params={"after": cursor}).json()
    assert stale["reset"] is True and len(stale["points"]) == 5  # replace, don't append

    listed = {e["id"]: e for e in solo.request("GET", "/api/runs").json()}
    assert listed[run_id]["status"] == "done" and listed[run_id]["total"] == 5
    events = read_events(f"{solo.base_url}/api/runs/{run_id}/events")
    assert sum(e[1] == "point" for e in events) == 5 and events[-1][1] == "end"
    csv_text = solo.request("GET", f"/api/runs/{run_id}/export", params={"format": "csv"}).text
    assert csv_text.splitlines()[0] == "index,alpha,loss,accuracy,loss_lo,loss_hi,accuracy_lo,accuracy_hi"
    assert len(csv_text.splitlines()) == 6
