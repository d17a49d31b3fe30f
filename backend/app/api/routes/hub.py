"""Routes: checkpoints from the Hugging Face Hub by id — ``POST /checkpoints/hub`` queues a
download (a job of the kernel's ``hub`` kind, :mod:`service.jobs.hub`) and answers at once;
``GET /checkpoints/hub/{id}`` is its progress and, once done, the stored checkpoint.

A new route rather than an extension of ``POST /checkpoints/register``: registering reads a
folder on the server's disk synchronously (and is off unless ``BASIN_REGISTER_ROOTS`` allows
folders), while a Hub download takes minutes on a worker, so it answers 202 with a job whose
progress the page polls. Writes need the API token when one is set.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Response

from backend.app.api.deps import RedisDep, SettingsDep, StoreDep, WriteAuth
from backend.app.api.errors import responses
from service.jobs.hub import HubNotFound, HubSpec, cancel_hub_job, create_hub_job, hub_detail
from service.jobs.limits import JobLimits

router = APIRouter(tags=["checkpoints"])
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@router.post(
    "/checkpoints/hub", status_code=202, responses=responses(422, 503), dependencies=[WriteAuth]
)
def fetch_from_hub(
    body: HubSpec, response: Response, settings: SettingsDep, store: StoreDep, r: RedisDep
) -> dict[str, Any]:
    """Fetch ``ref`` (``org/name@revision``; no revision = ``main``) from the Hub into the store,
    on a worker: the revision is pinned to the commit the Hub answers, every file is checked
    against the Hub's sha256 / git blob id, only safetensors weights are taken (a repository
    with only ``pytorch_model.bin`` is refused unless ``allow_bin``: then it is read with
    torch's weights-only loader and stored as safetensors), and the checkpoint is stored like an
    upload with tags ``hub_repo``, ``hub_revision`` (the commit) and ``hub_ref``. Fetched once:
    the same repository and commit already stored is not downloaded again.
    ``HF_ENDPOINT`` and ``HF_TOKEN`` are the workers'. Answers ``{id, url, status}``; poll ``url``."""
    job_id = create_hub_job(
        r,
        body,
        redis_url=settings.redis_url,
        queue=settings.task_queue,
        limits=JobLimits.from_settings(settings),
        store=store,
    )
    url = f"/api/checkpoints/hub/{job_id}"
    response.headers["Location"] = url
    return {"id": job_id, "url": url, "status": "queued"}


@router.get("/checkpoints/hub/{job_id}", responses=responses(404, 503))
def hub_status(job_id: str, r: RedisDep) -> dict[str, Any]:
    """A Hub download: status, files and bytes done / to do, the pinned commit, the error; once
    done the stored checkpoint's id and name, and whether it was new (``created``)."""
    if not _JOB_ID.match(job_id):
        raise HubNotFound(f"no Hub download with id {job_id!r}")
    return hub_detail(r, job_id)


@router.post(
    "/checkpoints/hub/{job_id}/cancel", responses=responses(404, 409), dependencies=[WriteAuth]
)
def hub_cancel(job_id: str, r: RedisDep) -> dict[str, str]:
    """Stop a Hub download: a queued one at once, a running one before its next file (nothing is
    stored); 409 once it has ended."""
    if not _JOB_ID.match(job_id):
        raise HubNotFound(f"no Hub download with id {job_id!r}")
    return {"id": job_id, "status": cancel_hub_job(r, job_id)}
