"""Routes: subspace jobs (issue 27) — create (validated, queued), list, status (losses so far), cancel.

Bookkeeping: the job kernel's ``subspace`` kind, :mod:`service.jobs.subspace`. A spec's
references (solutions and ``base``: checkpoints; ``train`` / ``eval``: datasets;
``projections``: a subspace artefact) are rewritten to store ids before it is queued.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from backend.app import runs as book
from backend.app.api.deps import RedisDep, SettingsDep, StoreDep, WriteAuth
from backend.app.api.errors import carried_references, responses
from basin.errors import InvalidSpec
from service.jobs.limits import JobLimits
from service.jobs.subspace import (
    SUBSPACE,
    SubspaceNotFound,
    cancel_subspace,
    create_subspace,
    list_subspaces,
    parse_subspace_spec,
    subspace_detail,
)

router = APIRouter(tags=["subspaces"])


async def _body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError as e:
        raise InvalidSpec(f"invalid subspace spec: the body is not JSON ({e})") from None


Body = Annotated[Any, Depends(_body)]


def _job_id(job_id: str) -> str:
    try:
        return book.check_run_id(job_id)
    except Exception:
        raise SubspaceNotFound(job_id) from None


JobId = Annotated[str, Depends(_job_id)]


def resolve_subspace_spec(body: Any, store: Any, names: dict[str, str], limits: JobLimits) -> Any:
    """Parse, check the caps (before any file is read), rewrite references to store ids."""
    spec = parse_subspace_spec(body)
    over = SUBSPACE.check(spec, limits, None, {})
    if over:
        raise InvalidSpec("invalid subspace spec: " + "; ".join(over))

    def ckpt(ref: str) -> str:
        m = store.get_checkpoint(ref)
        names.setdefault(m["id"], str(m.get("name") or ref))
        return str(m["id"])

    def data(ref: str | None) -> str | None:
        if ref is None:
            return None
        m = store.get_dataset(ref)
        names.setdefault(m["id"], str(m.get("name") or ref))
        return str(m["id"])

    dump = spec.model_dump(mode="json")
    with carried_references():
        if spec.kind == "subspace_fit":
            dump["tasks"] = {
                t: {
                    "train": data(ts.train),
                    "eval": data(ts.eval),
                    "solutions": {m: ckpt(ref) for m, ref in ts.solutions.items()},
                }
                for t, ts in spec.tasks.items()
            }
        else:
            art = store.get_artefact(spec.projections)
            if art.get("type") != "subspace":
                raise InvalidSpec(f"projections {spec.projections!r} is not a subspace artefact")
            names.setdefault(art["id"], str(art.get("name")))
            dump.update(
                projections=art["id"],
                base=ckpt(spec.base),
                train=data(spec.train),
                eval=data(spec.eval),
            )
    return parse_subspace_spec(dump)


@router.post("/subspaces", status_code=201, responses=responses(422, 503), dependencies=[WriteAuth])
def create(body: Body, settings: SettingsDep, store: StoreDep, r: RedisDep) -> dict[str, str]:
    """Validate a subspace spec (``kind: subspace_fit`` or ``subspace_optimise``; the server's caps,
    quota and time limit for every kind of job) and queue it on a worker; ``{id, url}``."""
    names: dict[str, str] = {}
    limits = JobLimits.from_settings(settings)
    spec = resolve_subspace_spec(body, store, names, limits)
    job_id = create_subspace(
        r,
        spec,
        names=names,
        redis_url=settings.redis_url,
        queue=settings.task_queue,
        limits=limits,
        store=store,
    )
    return {"id": job_id, "url": f"{settings.public_url.rstrip('/')}/subspaces/{job_id}"}


@router.get("/subspaces", responses=responses(401, 503))
def list_all(settings: SettingsDep, r: RedisDep) -> list[dict[str, Any]]:
    """Every subspace job Redis still has, newest first."""
    return list_subspaces(r, public_url=settings.public_url.rstrip("/"))


@router.get("/subspaces/{job_id}", responses=responses(404, 503))
def get(job_id: JobId, settings: SettingsDep, r: RedisDep) -> dict[str, Any]:
    """A subspace job: status, step / total, the losses so far (a fit's reconstruction and task
    loss per task and method), error; once done the projections' artefact id or the decoded
    adapters' checkpoint ids, and the stage's table."""
    return {
        **subspace_detail(r, job_id),
        "url": f"{settings.public_url.rstrip('/')}/subspaces/{job_id}",
    }


@router.post("/subspaces/{job_id}/cancel", responses=responses(404, 409), dependencies=[WriteAuth])
def cancel(job_id: JobId, r: RedisDep) -> dict[str, str]:
    """Stop a queued or running subspace job (its worker stops before the next step); 409 once ended."""
    return {"id": job_id, "status": cancel_subspace(r, job_id)}


@router.get("/artefacts", responses=responses(401, 503))
def artefacts(store: StoreDep) -> list[dict[str, Any]]:
    """The store's artefacts (subspace projections), newest first: id, name, type, tags, size."""
    return [{k: v for k, v in m.items() if k != "path"} for m in store.list_artefacts()]
