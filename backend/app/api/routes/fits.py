"""Routes: curve fits — create (validated, queued), list, status (losses so far), cancel.

Bookkeeping: :mod:`backend.app.fits` (validation) and the job kernel's ``fit`` kind,
:mod:`service.jobs.fit` (limits, Redis state).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from backend.app import runs as book
from backend.app.api.deps import MayList, RedisDep, SettingsDep, StoreDep, WriteAuth
from backend.app.api.errors import responses
from backend.app.fits import check_origin, fitted_for_run, resolve_fit_spec
from basin.errors import InvalidSpec
from service.jobs.fit import FitNotFound, cancel_fit, create_fit, fit_detail, list_fits
from service.jobs.limits import JobLimits

router = APIRouter(tags=["fits"])


async def _body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError as e:
        raise InvalidSpec(f"invalid fit spec: the body is not JSON ({e})") from None


FitBody = Annotated[Any, Depends(_body)]


def _fit_id(fit_id: str) -> str:
    try:
        return book.check_run_id(fit_id)
    except Exception:
        raise FitNotFound(fit_id) from None


FitId = Annotated[str, Depends(_fit_id)]


def _url(settings, fit_id: str) -> str:
    return f"{settings.public_url.rstrip('/')}/fits/{fit_id}"


@router.post("/fits", status_code=201, responses=responses(422, 503), dependencies=[WriteAuth])
def create(body: FitBody, settings: SettingsDep, store: StoreDep, r: RedisDep,
           from_run: Annotated[str | None, Query(max_length=64)] = None) -> dict[str, str]:
    """Validate a fit spec (references resolved to store ids; the server's caps, quota and
    time limit for every kind of job, for the fit and both evaluation runs it will queue),
    queue it on a worker; ``{id, url}``. ``from_run``: the straight-line run between the
    same endpoints it is started from (the run page's button): that run's link shows the fit."""
    names: dict[str, str] = {}
    limits = JobLimits.from_settings(settings)
    spec = resolve_fit_spec(body, store, names=names, limits=limits)
    origin = check_origin(r, store, from_run, spec) if from_run else None
    fit_id = create_fit(r, spec, names=names, redis_url=settings.redis_url, queue=settings.task_queue,
                        limits=limits, store=store, origin=origin)
    return {"id": fit_id, "url": _url(settings, fit_id)}


@router.get("/fits", responses=responses(401, 503))
def list_all(settings: SettingsDep, r: RedisDep) -> list[dict[str, Any]]:
    """Every fit Redis still has (ended ones expire with ended runs), newest first: id, url,
    status, endpoints (ids and names), curve, step / total, created, finished, final
    training loss, error, control checkpoint id and evaluation run ids. Needs the API token
    when one is set (the list holds every fit's link), like ``GET /api/runs``."""
    return list_fits(r, public_url=settings.public_url.rstrip("/"))


@router.get("/fits/{fit_id}", responses=responses(404, 503))
def get(fit_id: FitId, settings: SettingsDep, r: RedisDep) -> dict[str, Any]:
    """A fit: status, step / total, losses so far ``[{step, loss}]``, ETA, error; once done the
    control checkpoint's store id and the ids of the line and curve evaluation runs."""
    return {**fit_detail(r, fit_id), "url": _url(settings, fit_id)}


@router.post("/fits/{fit_id}/cancel", responses=responses(404, 409), dependencies=[WriteAuth])
def cancel(fit_id: FitId, r: RedisDep) -> dict[str, str]:
    """Stop a queued or running fit (its worker stops before the next step); 409 once ended."""
    return {"id": fit_id, "status": cancel_fit(r, fit_id)}


@router.get("/runs/{run_id}/fitted", responses=responses(404, 503))
def fitted(run_id: Annotated[str, Depends(book.check_run_id)], settings: SettingsDep, store: StoreDep,
           r: RedisDep, may_list: MayList) -> dict[str, Any]:
    """For a straight-line run A→B: the curves fitted between the same endpoints, newest first —
    fit id and link (while Redis keeps the fit), status, curve type, control checkpoint,
    the curve's evaluation run and whether it evaluated the same data as this run; other
    runs: ``fits: []``. Open like the run's other routes (the run's link is the capability),
    and like them it reveals only this run's own: with ``BASIN_API_TOKEN`` set, a request
    without the token sees only the fit whose line evaluation this run is; with the token
    (or on a server without one, where every list is open), every fit between A and B."""
    return fitted_for_run(r, store, run_id, public_url=settings.public_url.rstrip("/"), everything=may_list)
