"""Routes: studies of N checkpoints — create (validated, queued), list, detail (the matrix so
far), cancel, export (JSON / CSV). The kind: :mod:`service.jobs.study`; docs/study.md."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import PlainTextResponse

from backend.app import runs as book
from backend.app.api.deps import RedisDep, SettingsDep, StoreDep, WriteAuth
from backend.app.api.errors import carried_references, responses
from basin.errors import InvalidSpec
from basin.study.matrix import to_csv
from basin.study.plan import StudySpec, parse_study
from service.jobs import JobNotFound, cancel_job
from service.jobs.limits import JobLimits
from service.jobs.study import STUDY, create_study, list_studies, study_detail

router = APIRouter(tags=["studies"])


async def _body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError as e:
        raise InvalidSpec(f"invalid study spec: the body is not JSON ({e})") from None


def _study_id(study_id: str) -> str:
    try:
        return book.check_run_id(study_id)
    except Exception:
        raise STUDY.not_found(study_id) from None


StudyId = Annotated[str, Depends(_study_id)]


def resolve_study(
    body: Any, store: Any, *, names: dict[str, str], tags: list[dict[str, Any]]
) -> StudySpec:
    """Parse a study spec, add the checkpoints ``where`` selects by their store tags, rewrite every
    reference to a store id (names recorded in ``names``, each checkpoint's store tags under
    the spec's own in ``tags``) and check a pair's run against the store (compatibility)."""
    if not isinstance(body, dict):
        raise InvalidSpec("invalid study spec: the body must be a JSON object")
    spec = parse_study(body)
    cks = [c.model_dump(mode="json") for c in spec.checkpoints]
    if spec.where:
        have = {c["ref"] for c in cks}
        for m in store.list_checkpoints():
            t = m.get("tags") or {}
            if (
                all(t.get(k) == v for k, v in spec.where.items())
                and m["id"] not in have
                and m.get("name") not in have
            ):
                cks.append({"ref": m["id"], "name": m.get("name"), "tags": {}})
    if len(cks) < 2:
        raise InvalidSpec(
            f"invalid study spec: a study needs at least 2 checkpoints; 'where' {spec.where} "
            f"and 'checkpoints' name {len(cks)}"
        )
    with carried_references():  # an unknown name is bad input (422), not a missing URL
        return _resolved(spec, cks, store, names=names, tags=tags)


def _resolved(
    spec: StudySpec,
    cks: list[dict[str, Any]],
    store: Any,
    *,
    names: dict[str, str],
    tags: list[dict[str, Any]],
) -> StudySpec:
    for c in cks:
        m = store.get_checkpoint(c["ref"])
        names.setdefault(m["id"], str(m.get("name") or c["ref"]))
        c["name"] = c.get("name") or m.get("name")
        c["ref"] = m["id"]
        tags.append({**(m.get("tags") or {}), **(c.get("tags") or {})})

    def ds(ref: str) -> str:
        m = store.get_dataset(ref)
        names.setdefault(m["id"], str(m.get("name") or ref))
        return str(m["id"])

    data = {
        **spec.model_dump(mode="json"),
        "checkpoints": cks,
        "where": None,
        "dataset": ds(spec.dataset),
        "datasets": {k: ds(v) for k, v in spec.datasets.items()},
    }
    resolved = parse_study(data)
    from backend.app.runs import check_compatibility

    check_compatibility(resolved.pair_spec(0, 1), store, names=names)
    return resolved


@router.post("/studies", status_code=201, responses=responses(422, 503), dependencies=[WriteAuth])
def create(
    body: Annotated[Any, Depends(_body)], settings: SettingsDep, store: StoreDep, r: RedisDep
) -> dict[str, str]:
    """Validate a study spec (references resolved to store ids; the server's caps on every run it
    will queue, the checkpoints cap, the job time limit), queue its first phase of pair runs;
    ``{id, url}``."""
    names: dict[str, str] = {}
    tags: list[dict[str, Any]] = []
    spec = resolve_study(body, store, names=names, tags=tags)
    study_id = create_study(
        r,
        spec,
        names=names,
        tags=tags,
        redis_url=settings.redis_url,
        queue=settings.task_queue,
        limits=JobLimits.from_settings(settings),
        store=store,
    )
    return {"id": study_id, "url": f"{settings.public_url.rstrip('/')}/studies/{study_id}"}


@router.get("/studies", responses=responses(401, 503))
def list_all(settings: SettingsDep, r: RedisDep) -> list[dict[str, Any]]:
    """Every study Redis still has, newest first (needs the API token when one is set, like ``GET /api/runs``)."""
    return list_studies(r, public_url=settings.public_url.rstrip("/"))


@router.get("/studies/{study_id}", responses=responses(404, 503))
def get(study_id: StudyId, settings: SettingsDep, r: RedisDep) -> dict[str, Any]:
    """A study: status, spec, its pair runs, and the result so far — the barrier matrix with a
    verdict per cell, leaf order and dendrogram, clusters, groups, instability, evaluations."""
    return {
        **study_detail(r, study_id),
        "url": f"{settings.public_url.rstrip('/')}/studies/{study_id}",
    }


@router.post("/studies/{study_id}/cancel", responses=responses(404, 409), dependencies=[WriteAuth])
def cancel(study_id: StudyId, r: RedisDep, store: StoreDep) -> dict[str, str]:
    """Stop a study: every pair run that has not ended is cancelled; 409 once ended."""
    return {"id": study_id, "status": cancel_job(r, STUDY, study_id, store=store)}


@router.get("/studies/{study_id}/export", responses=responses(404, 422, 503), response_model=None)
def export(
    study_id: StudyId,
    r: RedisDep,
    table: Annotated[str, Query(pattern="^(json|matrix|clusters|groups)$")] = "json",
) -> Any:
    """The result as JSON (``table=json``) or one table as CSV: ``matrix`` (pair × metric:
    barrier, interval, verdict, points, run), ``clusters`` (member × metrics), ``groups``."""
    d = study_detail(r, study_id)
    if table == "json":
        return d["result"]
    try:
        text = to_csv(d["result"], table)
    except ValueError as e:  # pragma: no cover - the pattern above
        raise InvalidSpec(str(e)) from None
    return PlainTextResponse(
        text,
        media_type="text/csv",
        headers={"Content-Disposition": f'attachment; filename="study-{study_id[:8]}-{table}.csv"'},
    )


__all__ = ["JobNotFound", "resolve_study", "router"]
