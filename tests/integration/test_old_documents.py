"""Result documents written before the service layer and the registries still open: share
links of old runs answer through the API (detail, points, export, list) and ``basin plot``
draws them. The documents are in the formats earlier versions stored: a run ended by a
worker (names, anchors with ids, a summary with loss and accuracy barriers only), and an
early one with an ISO ``created``, no ``status`` and no ``total``.
"""

from __future__ import annotations

import json
import secrets

import pytest

from basin.cli import main as basin_main

A, B = "a" * 64, "b" * 64


def _linear_points(n: int) -> list[dict]:
    return [{"index": i, "coords": {"alpha": i / (n - 1)},
             "metrics": {"loss": 0.4 + 0.3 * (1 - abs(2 * i / (n - 1) - 1)), "accuracy": 0.8}}
            for i in range(n)]


WORKER_DOC = {  # what a worker stored at 085acc6 (service/documents.build_document's fields)
    "spec": {"path": {"type": "linear", "a": A, "b": B, "points": 5, "range": [0.0, 1.0]},
             "dataset": "d" * 64, "task": "classification", "metrics": ["loss", "accuracy"],
             "max_examples": 32, "batch_size": 16, "max_length": 128, "seed": 0, "device": "auto",
             "dtype": "auto", "scope": "all", "on_mismatch": "error", "tokenizer": None, "name": None},
    "points": _linear_points(5),
    "anchors": [{"name": "seed1", "id": A, "coords": {"alpha": 0.0}},
                {"name": "seed2", "id": B, "coords": {"alpha": 1.0}}],
    "names": {A: "seed1", B: "seed2", "d" * 64: "eval.csv"},
    "summary": {"barrier": {"loss": {"value": 0.3, "alpha": 0.5, "start": 0.0, "end": 1.0},
                            "accuracy": {"value": 0.0, "alpha": 0.0, "start": 0.0, "end": 1.0}},
                "distance": {"l2": 9.5, "cosine": 0.8, "per_tensor": [], "per_layer": []}},
    "timings": {"load_s": 1.0, "eval_s": 2.0, "total_s": 3.2, "points_per_s": 1.5, "device": "cpu",
                "evaluations": 5, "cached_points": 0},
    "status": "done", "created": 1764000000.0, "finished": 1764000003.2, "total": 5, "error": None,
}

EARLY_DOC = {  # the first slice's store: ISO created, no status, no total, no names
    "spec": {"path": {"type": "plane", "a": A, "b": B, "c": "c" * 64, "resolution": [2, 2],
                      "margin": 0.2}, "dataset": "d" * 64},
    "points": [{"index": i, "coords": {"x": float(i % 2), "y": float(i // 2)},
                "metrics": {"loss": 0.5 + 0.1 * i}} for i in range(4)],
    "anchors": [{"name": A, "coords": {"x": 0.0, "y": 0.0}}],
    "summary": {"min": {"loss": {"value": 0.5, "coords": {"x": 0.0, "y": 0.0}}},
                "max": {"loss": {"value": 0.8, "coords": {"x": 1.0, "y": 1.0}}}},
    "timings": {"load_s": 1.0, "eval_s": 1.0, "total_s": 2.0, "points_per_s": 2.0, "device": "cpu"},
    "created": "2026-11-01T10:00:00+00:00",
}


@pytest.mark.parametrize("doc", [WORKER_DOC, EARLY_DOC], ids=["worker-stored", "early"])
def test_an_old_document_opens_through_the_api_and_basin_plot(stack, doc, tmp_path):
    run_id = secrets.token_urlsafe(16)
    path = stack.store / "runs" / f"{run_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    n = len(doc["points"])

    d = stack.request("GET", f"/api/runs/{run_id}")
    assert d.status_code == 200, d.text
    d = d.json()
    assert d["source"] == "store" and d["status"] == "done" and d["done"] == d["total"] == n
    assert d["checkpoints"][:2] == [A, B] and d["summary"] == doc["summary"]
    pts = stack.request("GET", f"/api/runs/{run_id}/points").json()
    assert len(pts["points"]) == n and pts["status"] == "done"
    csv_rows = stack.request("GET", f"/api/runs/{run_id}/export?format=csv").text.splitlines()
    assert len(csv_rows) == 1 + n
    listed = {e["id"]: e for e in stack.request("GET", "/api/runs").json()}
    assert listed[run_id]["status"] == "done" and listed[run_id]["created"] is not None

    exported = tmp_path / "old.json"
    exported.write_text(stack.request("GET", f"/api/runs/{run_id}/export").text)
    report = tmp_path / "old.html"
    assert basin_main(["plot", str(exported), "-o", str(report)]) == 0
    html = report.read_text()
    assert "plotly" in html.lower()
    if doc is WORKER_DOC:  # the names the run was made with title the report, not the ids
        assert "seed1" in html and "seed2" in html
