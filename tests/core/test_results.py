"""The result contract (basin/results.py): one builder for point records and documents, a
schema version, old documents still read, and the points view leaves the stored columns out."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from basin.results import SCHEMA_VERSION, RunDocument, point_record, point_view, run_document
from tests.integration.test_old_documents import EARLY_DOC, WORKER_DOC

MEASURED = {
    "metrics": {"loss": 0.5, "accuracy": float("nan")},
    "intervals": {"loss": [0.4, 0.6]},
    "examples": {"loss": [0.1, 0.9], "correct": [1, 0], "confidence": [0.9, 0.2]},
    "ensemble": {"loss": 0.45},
    "samples": [{"prompt": "p", "text": "t", "sentiment": 0.9}],
}


def test_a_point_record_keeps_every_field_it_was_given_and_only_those():
    rec = point_record(3, {"alpha": 0.5}, MEASURED)
    assert set(rec) == {
        "index",
        "coords",
        "metrics",
        "intervals",
        "examples",
        "ensemble",
        "samples",
    }
    assert rec["index"] == 3 and rec["coords"] == {"alpha": 0.5}
    assert math.isnan(rec["metrics"]["accuracy"])  # NaN stays NaN (json.dumps writes it)
    assert set(point_record(0, {"alpha": 0.0}, {"metrics": {"loss": 1.0}})) == {
        "index",
        "coords",
        "metrics",
    }


def test_a_malformed_point_record_is_refused_by_the_builder():
    with pytest.raises(ValidationError):
        point_record(0, {"alpha": 0.0}, {"metrics": {"loss": "high"}})
    with pytest.raises(ValidationError):
        point_record(0, {"alpha": 0.0}, {"intervals": {"loss": [0.1, 0.2]}})  # no metrics


def test_the_view_has_coordinates_metrics_intervals_and_ensemble_samples_only_when_asked():
    rec = point_record(3, {"alpha": 0.5}, {**MEASURED, "bootstrap": {"n": 2, "loss": "AAAA"}})
    view = point_view(rec)
    assert set(view) == {"index", "coords", "metrics", "intervals", "ensemble"}
    assert set(point_view(rec, samples=True)) == set(view) | {"samples"}
    assert "examples" in rec and "bootstrap" in rec  # the record keeps them (stored, exported)


def test_a_document_is_versioned_and_its_points_sorted():
    doc = run_document(
        spec={"path": {"type": "linear"}},
        status="done",
        points=[point_record(i, {"alpha": i / 2}, {"metrics": {"loss": 1.0}}) for i in (2, 0, 1)],
    )
    assert doc["schema_version"] == SCHEMA_VERSION
    assert [p["index"] for p in doc["points"]] == [0, 1, 2]
    assert "error" not in doc  # fields not given are left out


@pytest.mark.parametrize("old", [WORKER_DOC, EARLY_DOC], ids=["worker-stored", "early"])
def test_documents_stored_before_the_version_read_as_version_1(old):
    doc = RunDocument.model_validate(old)
    assert doc.schema_version == 1
    assert len(doc.points) == len(old["points"])
    again = run_document(**old)  # read and written back: nothing is lost
    assert {k: v for k, v in again.items() if k != "schema_version"} == old
