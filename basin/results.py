"""The result contract: a point record and a run's result document, typed and versioned.

One place builds them: :func:`point_record` (what :func:`basin.drive.drive` hands a sink:
the CLI's list, a worker's Redis stream, the point cache's value plus index and
coordinates) and :func:`run_document` (what ``basin eval -o`` writes and the service
stores as ``models_store/runs/<id>.json``). Both validate their fields and dump plain JSON
dicts (NaN stays NaN, as ``json.dumps`` writes it), so everything downstream (figures, exports, the API) keeps reading dicts.

:data:`SCHEMA_VERSION` is written into every document. Documents stored before the field
existed have the same shape and read as version 1; fields a later version adds are kept
(``extra="allow"``), so reading and writing back never drops anything.

:func:`point_view` is what a viewer polls (``GET /api/runs/{id}/points``): coordinates,
metrics, intervals, the ensemble and, only when asked, the samples — not the per-example
columns (``examples``) nor the barrier interval's packed columns (``bootstrap``), which
stay in the stored document and the exports. No torch here.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

#: The version of the result document (and point record) this code writes.
SCHEMA_VERSION = 1

#: Point-record fields a viewer gets (``samples`` only when asked): see :func:`point_view`.
VIEW_FIELDS = ("index", "coords", "metrics", "intervals", "ensemble")


class PointRecord(BaseModel):
    """One evaluated grid point."""

    model_config = ConfigDict(extra="allow")

    index: int = Field(description="flat, row-major for planes: iy * nx + ix")
    coords: dict[str, float] = Field(description='1D: {"alpha": a}; planes: {"x": x, "y": y}')
    metrics: dict[str, float | None]
    intervals: dict[str, list[float | None]] | None = Field(
        None,
        description="95 % interval [lo, hi] per metric over the examples (loss, accuracy, perplexity)",
    )
    ensemble: dict[str, float | None] | None = Field(
        None,
        description="output ensembling at this α (runs with ensemble: true); equals metrics at α = 0, 1",
    )
    samples: list[dict[str, Any]] | None = Field(
        None,
        description="the point's kept generations {prompt, text, <scores>} (runs that generate)",
    )
    examples: dict[str, list[Any]] | None = Field(
        None,
        description="per-example outcomes in dataset order (runs with per_example: true): classification "
        "loss, correct, confidence; causal_lm / seq2seq nll, tokens. Stored, not in the points view",
    )
    bootstrap: dict[str, Any] | None = Field(
        None,
        description="1D runs without per_example: the barrier interval's columns, packed "
        "(basin.analysis.uncertainty.pack_bootstrap). Stored, not in the points view",
    )


class PointView(BaseModel):
    """What ``GET /api/runs/{id}/points`` serves of a point (:func:`point_view`)."""

    index: int = Field(description="flat, row-major for planes: iy * nx + ix")
    coords: dict[str, float] = Field(description='1D: {"alpha": a}; planes: {"x": x, "y": y}')
    metrics: dict[str, float | None]
    intervals: dict[str, list[float | None]] | None = Field(
        None, description="95 % interval [lo, hi] per metric over the examples"
    )
    ensemble: dict[str, float | None] | None = Field(
        None, description="output ensembling at this α"
    )
    samples: list[dict[str, Any]] | None = Field(
        None, description="the kept generations: only with ?samples=true"
    )


class RunDocument(BaseModel):
    """A run's result document (docs/contracts.md). The service adds its fields (``id`` ...)."""

    model_config = ConfigDict(extra="allow")

    schema_version: int = Field(SCHEMA_VERSION, description="documents without it read as 1")
    spec: dict[str, Any] = Field(default_factory=dict, description="the RunSpec, resolved")
    points: list[PointRecord] = Field(default_factory=list, description="sorted by index")
    anchors: list[dict[str, Any]] = Field(default_factory=list)
    summary: dict[str, Any] | None = None
    timings: dict[str, Any] | None = None
    status: str | None = None
    # the service's fields (documents in models_store/runs/)
    id: str | None = None
    names: dict[str, str] | None = None
    tags: dict[str, dict[str, Any]] | None = None
    created: float | str | None = None
    finished: float | str | None = None
    total: int | None = None
    error: str | None = None


def point_record(index: int, coords: dict[str, float], measured: dict[str, Any]) -> dict[str, Any]:
    """A point's record from its index, coordinates and :meth:`Landscape.measure`'s dict."""
    rec = PointRecord.model_validate({"index": index, "coords": dict(coords), **measured})
    return rec.model_dump(exclude_unset=True)


def run_document(**fields: Any) -> dict[str, Any]:
    """A result document from its fields (points in any order: sorted by index here), with
    :data:`SCHEMA_VERSION`. Fields not given are left out."""
    fields.setdefault("schema_version", SCHEMA_VERSION)
    doc = RunDocument.model_validate(fields)
    doc.points.sort(key=lambda p: p.index)
    return doc.model_dump(exclude_unset=True)


def point_view(record: dict[str, Any], *, samples: bool = False) -> dict[str, Any]:
    """What a viewer polls of a point record: :data:`VIEW_FIELDS` (and ``samples`` when asked)."""
    keep = (*VIEW_FIELDS, "samples") if samples else VIEW_FIELDS
    return {k: record[k] for k in keep if k in record}


__all__ = [
    "SCHEMA_VERSION",
    "VIEW_FIELDS",
    "PointRecord",
    "PointView",
    "RunDocument",
    "point_record",
    "point_view",
    "run_document",
]
