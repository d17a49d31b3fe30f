"""Request and response schemas of the runs API: ``RunCreated``, ``RunValidated``,
``RunPublic`` (one run), ``RunListItem``, ``PointsPage``, ``RunCancelled``.

The create body is :class:`basin.spec.RunSpec` itself, documented but not parsed by
FastAPI: :func:`basin.spec.parse_spec` parses it so that a bad spec gets Basin's one
readable ``invalid spec: …`` message (422), the same from ``/runs/validate`` and the
CLI, instead of FastAPI's list of validation errors. :data:`SPEC_BODY` puts RunSpec's
schema in the OpenAPI page; :class:`RunValidated` (whose ``spec`` is a RunSpec) is what
brings that schema into ``components``.

Fields that come from stored result documents stay loose (``dict``) where older
documents may differ, so a share link keeps answering what it answered before.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from basin.results import PointRecord, PointView
from basin.spec import RunSpec

#: OpenAPI text for ``POST /runs`` and ``/runs/validate``: the body is a RunSpec (JSON).
SPEC_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A RunSpec; checkpoint and dataset references are store ids, "
        "unique id prefixes or names.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RunSpec"}}},
    }
}


class RunCreated(BaseModel):
    """A queued run: its id and share link."""

    id: str = Field(description="128 random bits, URL-safe base64: the share link is a capability")
    url: str = Field(description="the share link, ``<BASIN_PUBLIC_URL>/runs/<id>``")


class RunValidated(BaseModel):
    """A spec that creating would accept, with references rewritten to store ids."""

    ok: Literal[True] = True
    num_points: int
    spec: RunSpec = Field(description="the resolved spec: store ids, defaults filled in")
    estimate: dict[str, Any] | None = Field(
        None,
        description="what the run will cost on this server (service/estimate.py): seconds, "
        "wall_s over the alive workers, words, basis (measured or fallback), warning and "
        "suggestions above ~10 minutes; null when the model's size is unknown",
    )


class RunCancelled(BaseModel):
    """The answer to a cancel."""

    id: str
    status: Literal["cancelled"]


class WorkerBrief(BaseModel):
    """A live worker draining this run."""

    name: str | None
    device: str | None
    index: int | None = Field(description="the point it is evaluating, if any")


class _RunBrief(BaseModel):
    """What a list entry and a run's detail share (in the order the API has always sent)."""

    id: str
    url: str = Field(description="the share link")
    spec: dict[str, Any] = Field(
        description="the RunSpec as queued (store ids); a stored document's as written then"
    )
    type: str | None = Field(description="the path type, e.g. linear or plane")
    checkpoints: list[str] = Field(description="every checkpoint of the path, in anchor order")
    dataset: str | None
    name: str | None = Field(description="the spec's optional name")
    names: dict[str, str] = Field(
        description="store id → the checkpoint's or dataset's name in the store when the run was made"
    )
    status: str = Field(description="queued, running, done, failed or cancelled")


class RunListItem(_RunBrief):
    """One run in ``GET /runs`` (newest first)."""

    created: float | None = Field(description="Unix seconds")
    done: int
    total: int
    error: str | None


class RunPublic(_RunBrief):
    """One run: ``GET /runs/{id}``, from Redis while it lives there, else from its document."""

    done: int = Field(description="points recorded")
    total: int = Field(description="points planned")
    progress: float = Field(description="done / total")
    eta_s: float | None = Field(description="seconds left (0 when done; null if unknown)")
    created: float | str | None = Field(description="Unix seconds")
    started: float | None
    finished: float | str | None
    summary: dict[str, Any] | None = Field(description="barriers, distances… (when done)")
    anchors: list[dict[str, Any]] = Field(
        description="the checkpoints' positions: {name, id, coords, step?}"
    )
    error: str | None = Field(description="why the run failed")
    workers: list[WorkerBrief] = Field(description="the live workers draining it")
    warning: str | None = Field(
        description="set when the run is queued or running and no worker is alive"
    )
    evaluations: int | None = Field(description="points evaluated (not from the point cache)")
    cached_points: int | None = Field(description="points taken from the cross-run cache")
    requeued: int = Field(description="leases that expired and were handed out again")
    tags: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="checkpoint id → its tags when the run was made"
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="store id → its name in the store now (else when the run was made): what a "
        "page calls the run's checkpoints and dataset",
    )
    timings: dict[str, Any] | None
    source: Literal["redis", "store"]
    estimate: dict[str, Any] | None = Field(
        None,
        description="while unfinished: what its remaining points cost on this server "
        "(service/estimate.py: seconds, wall_s, words, basis)",
    )
    queue: dict[str, Any] | None = Field(
        None,
        description="while queued: {position, ahead: [{name, points_left, eta_s, background}], "
        "workers, start_in_s, background} — what runs before it (never their ids)",
    )


class PointsPage(BaseModel):
    """``GET /runs/{id}/points?after=<cursor>``: the points since the previous page."""

    points: list[PointView] = Field(
        description="each point's view: coordinates, metrics, intervals, ensemble (samples with "
        "?samples=true); the per-example columns are in the export"
    )
    cursor: str = Field(
        description="pass as ``after`` next time; ``store`` when served from the document"
    )
    status: str
    done: int
    total: int
    eta_s: float | None = Field(None, description="seconds left (0 when done; null if unknown)")
    workers: list[str | None] = Field(description="names of the live workers draining the run")
    warning: str | None = Field(
        description="set when the run is queued or running and no worker is alive"
    )
    error: str | None = Field(None, description="why the run failed")
    reset: bool | None = Field(
        None,
        description="only present (true) when a Redis cursor met a run now served from "
        "disk: replace the points, don't append",
    )


__all__ = [
    "SPEC_BODY",
    "PointRecord",
    "PointView",
    "PointsPage",
    "RunCancelled",
    "RunCreated",
    "RunListItem",
    "RunPublic",
    "RunValidated",
    "WorkerBrief",
]
