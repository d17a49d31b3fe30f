"""Routes: tune jobs (families of fine-tuned checkpoints) — create (validated, queued), list,
status (members, live losses, ETA), cancel; and a run's forgetting table joined with the
dataset cartography of its endpoint when a tune job produced it.

Bookkeeping: :mod:`backend.app.tunes` (validation, the join) and the job kernel's ``tune``
kind, :mod:`service.jobs.tune` (limits, Redis state).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from backend.app import runs as book
from backend.app.api.deps import RedisDep, SettingsDep, StoreDep, WriteAuth
from backend.app.api.errors import responses
from backend.app.tunes import cartography_join, parse_body, read_cartography, resolve_tune_spec
from basin.errors import InvalidSpec
from service.jobs.limits import JobLimits
from service.jobs.tune import TuneNotFound, cancel_tune, create_tune, list_tunes, tune_detail
from service.store import NotFound

router = APIRouter(tags=["tunes"])

#: The largest tune spec body read (a spec is a few hundred bytes).
MAX_BODY = 256 * 1024


async def _body(request: Request) -> Any:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise InvalidSpec(f"invalid tune spec: the body is {len(raw):,} bytes, over {MAX_BODY:,}")
    return parse_body(raw, request.headers.get("content-type", ""))


TuneBody = Annotated[Any, Depends(_body)]


def _tune_id(tune_id: str) -> str:
    try:
        return book.check_run_id(tune_id)
    except Exception:
        raise TuneNotFound(tune_id) from None


TuneId = Annotated[str, Depends(_tune_id)]


def _url(settings, tune_id: str) -> str:
    return f"{settings.public_url.rstrip('/')}/tunes/{tune_id}"


@router.post("/tunes", status_code=201, responses=responses(422, 503), dependencies=[WriteAuth])
def create(body: TuneBody, settings: SettingsDep, store: StoreDep, r: RedisDep) -> dict[str, Any]:
    """Validate a tune spec (JSON, or YAML with ``Content-Type: application/yaml``; base and
    datasets resolved to store ids; the server's caps on steps, examples, length, batch
    size, members and the store's quota) and queue one worker task per member; ``{id, url, members}``."""
    names: dict[str, str] = {}
    limits = JobLimits.from_settings(settings)
    spec = resolve_tune_spec(body, store, names=names, limits=limits)
    tune_id = create_tune(
        r,
        spec,
        names=names,
        redis_url=settings.redis_url,
        queue=settings.task_queue,
        limits=limits,
        store=store,
    )
    return {"id": tune_id, "url": _url(settings, tune_id), "members": spec.num_members}


@router.get("/tunes", responses=responses(401, 503))
def list_all(settings: SettingsDep, r: RedisDep) -> list[dict[str, Any]]:
    """Every tune job Redis still has (ended ones expire with ended runs), newest first: id,
    url, name, status, base, dataset, members (ended, done), steps, created, finished, error."""
    return list_tunes(r, public_url=settings.public_url.rstrip("/"))


@router.get("/tunes/{tune_id}", responses=responses(404, 503))
def get(tune_id: TuneId, settings: SettingsDep, r: RedisDep) -> dict[str, Any]:
    """A tune job: status, the family's progress (steps done / total) and ETA, and each member
    (``member_list``): tags, status, attempt, step / total, live training losses
    ``[{step, loss, examples}]``, stored checkpoints ``[{step, id}]``, final checkpoint,
    held-out metrics, error."""
    return {**tune_detail(r, tune_id), "url": _url(settings, tune_id)}


@router.post("/tunes/{tune_id}/cancel", responses=responses(404, 409), dependencies=[WriteAuth])
def cancel(tune_id: TuneId, r: RedisDep) -> dict[str, str]:
    """Stop a queued or running tune job: queued members end at once, running ones before their
    next step (checkpoints already stored stay); 409 once ended."""
    return {"id": tune_id, "status": cancel_tune(r, tune_id)}


@router.get("/runs/{run_id}/cartography", responses=responses(404, 409, 422))
def run_cartography(
    run_id: Annotated[str, Depends(book.check_run_id)], store: StoreDep, r: RedisDep
) -> dict[str, Any]:
    """For a 1D classification run kept with ``per_example: true`` whose start θA (else end θB)
    is a tune member's final checkpoint with a dataset cartography: the forgetting table's
    rows joined with that member's cartography by example (text and label) — each example's
    α lost, confidence (mean gold-label probability over training) and variability. Are the
    examples forgotten first the ambiguous or hard-to-learn ones? ``{checkpoint, rows}``;
    ``checkpoint`` None and no rows when neither endpoint has a cartography."""
    from basin.analysis.forgetting import dataset_rows, forgetting
    from basin.data import read_rows, subsample

    doc = book.result_document(r, store, run_id)
    spec = doc.get("spec") or {}
    path = spec.get("path") or {}
    none: dict[str, Any] = {
        "run": run_id,
        "checkpoint": None,
        "role": None,
        "rows": [],
        "matched": 0,
        "examples": 0,
    }
    found = None
    for role in ("a", "b"):
        ref = path.get(role)
        found = read_cartography(store, str(ref)) if ref else None
        if found is not None:
            break
    if found is None:
        return none
    manifest, carto = found
    trained_on = (manifest.get("tags") or {}).get("trained_on")
    table = forgetting(doc)  # refuses a run without per-example results before reading files
    base = {
        **none,
        "checkpoint": manifest["id"],
        "checkpoint_name": manifest.get("name"),
        "role": role,
        "trained_on": trained_on,
        "examples": len(table.get("rows") or []),
    }
    if trained_on != spec.get("dataset"):
        return {
            **base,
            "note": "the run evaluated another dataset than the one the member trained on: "
            "its examples have no training dynamics",
        }
    try:
        data_path = store.resolver().dataset(str(spec.get("dataset")))
    except NotFound:
        return {**base, "note": "the run's dataset is no longer in the store"}
    table = forgetting(doc, dataset_rows(doc, data_path))  # with texts and labels
    _, file = read_rows(data_path)
    rows = subsample(len(file), int(spec.get("max_examples", 512)), int(spec.get("seed", 0)))
    joined = cartography_join(table, carto, list(rows))
    return {**base, "rows": joined, "matched": len(joined)}
