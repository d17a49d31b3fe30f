"""The ``hub`` job kind: fetch one checkpoint from the Hugging Face Hub into the store
(:func:`service.hub.import_from_hub`), queued by ``POST /api/checkpoints/hub`` and run by one
worker (:mod:`workers.hubjob`, the kernel's ``basin.job`` task). A worker-held kind
(:class:`~service.jobs.kernel.WorkerJobKind`): cancel, start, sign of life, time limit, end,
the reaper's rules, expiry, prune and seed are the kernel's.

============================ ====== ==================================================
``basin:hub:<id>``           hash   the kernel's fields (spec, names, status, created,
                                    started, finished, error, cancel, worker, beat,
                                    begun, time_limit_s) and step / total (files
                                    downloaded / to download), bytes / bytes_total,
                                    commit (the sha the revision was pinned to),
                                    checkpoint (the stored id), created_new ("1": new,
                                    "0": it was stored already), name
``basin:hubs``               zset   job id → created
``basin:hubs:active``        zset   job id → created: the jobs the reaper still visits
============================ ====== ==================================================

The spec: ``{"ref": "org/name@revision", "name": str | null, "tags": {...}, "allow_bin": bool}``.
Where the files come from (``HF_ENDPOINT``) and the token (``HF_TOKEN``) are the worker's
environment, never the request's: a token is not stored in Redis.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import redis
from pydantic import BaseModel, ConfigDict, Field

from basin.errors import BasinError
from service.jobs.kernel import (
    JobNotFound,
    JobState,
    WorkerJobKind,
    _f,
    create_job,
    job_hash,
    register,
)
from service.jobs.limits import JobLimits


class HubSpec(BaseModel):
    """What to fetch (``ref``), the name to store it under (default ``<name>@<commit[:8]>``),
    extra tags, and whether a repository with only ``pytorch_model.bin`` may be converted."""

    model_config = ConfigDict(extra="forbid")

    ref: str = Field(
        description="org/name or org/name@revision (a branch, a tag or a commit sha)",
        max_length=300,
    )
    name: str | None = Field(None, max_length=200)
    tags: dict[str, Any] | None = None
    allow_bin: bool = Field(
        False,
        description="a repository without safetensors: read its pytorch_model.bin "
        "with torch's weights-only loader and store it as safetensors",
    )


class HubNotFound(JobNotFound):
    """No Hub download with that id (404)."""


class HubKind(WorkerJobKind):
    name: ClassVar[str] = "hub"
    label: ClassVar[str] = "Hub download"
    executor: ClassVar[str] = "workers.hubjob:execute_hub"

    def check(self, spec: Any, limits: JobLimits, store: Any, names: dict[str, str]) -> list[str]:
        from basin.hub import parse_hub_ref
        from service.store import _check_name, _check_tags

        out: list[str] = []
        try:
            parse_hub_ref(spec.ref)
        except BasinError as e:
            out.append(f"ref: {e}")
        if spec.name is not None:
            try:
                _check_name(spec.name, "checkpoint")
            except BasinError as e:
                out.append(f"name: {e}")
        try:
            _check_tags(spec.tags)
        except BasinError as e:
            out.append(f"tags: {e}")
        if (
            store is not None
            and limits.store_bytes is not None
            and store.free_bytes(limits.store_bytes) == 0
        ):
            out.append(
                "the store is full under its quota (BASIN_MAX_STORE_BYTES): delete checkpoints first"
            )
        return out

    def fields(self, spec: Any, limits: JobLimits) -> dict[str, Any]:
        return {"step": 0, "total": 0, "bytes": 0, "bytes_total": 0}

    def not_found(self, job_id: str) -> JobNotFound:
        return HubNotFound(
            f"no Hub download with id {job_id!r} (an ended one is forgotten BASIN_FINISHED_RUN_TTL_S after it "
            "ends; the checkpoint it stored stays)"
        )

    def summarise(self, job_id: str, h: dict[str, Any], *, public_url: str = "") -> dict[str, Any]:
        return hub_view(job_id, h)


HUB = register(HubKind())


def hub_view(job_id: str, h: dict[str, Any]) -> dict[str, Any]:
    """What ``GET /api/checkpoints/hub/{id}`` answers, from the job's hash."""
    spec = json.loads(h.get("spec") or "{}")
    created_new = h.get("created_new")
    return {
        "id": job_id,
        "kind": "hub",
        "status": h.get("status"),
        "ref": spec.get("ref"),
        "name": h.get("name") or spec.get("name"),
        "allow_bin": bool(spec.get("allow_bin")),
        "files_done": int(h.get("step") or 0),
        "files_total": int(h.get("total") or 0),
        "bytes_done": int(h.get("bytes") or 0),
        "bytes_total": int(h.get("bytes_total") or 0),
        "commit": h.get("commit") or None,
        "checkpoint": h.get("checkpoint") or None,
        "created": None if created_new in (None, "") else created_new == "1",
        "error": h.get("error") or None,
        "queued_at": _f(h.get("created")),
        "started": _f(h.get("started")),
        "finished": _f(h.get("finished")),
    }


def create_hub_job(
    r: redis.Redis,
    spec: HubSpec,
    *,
    redis_url: str,
    queue: str,
    limits: JobLimits | None = None,
    store: Any = None,
) -> str:
    """Check the spec (ref, name, tags, quota), store the job queued, send its task; its id."""
    return create_job(
        r, HUB, spec, limits=limits or JobLimits(), redis_url=redis_url, queue=queue, store=store
    )


def hub_detail(r: redis.Redis, job_id: str) -> dict[str, Any]:
    return hub_view(job_id, job_hash(r, HUB, job_id))


class HubStopped(BasinError):
    """The download was cancelled or ran past the job time limit (between two files)."""


def progress_callback(js: JobState):
    """``on_progress`` for :func:`basin.hub.fetch` writing the job's progress fields; raises
    :class:`HubStopped` between two files once the job is cancelled or past its time limit."""

    def on_progress(done: int, total: int, nbytes: int, nbytes_total: int) -> None:
        js.progress(done, None, total=total, bytes=nbytes, bytes_total=nbytes_total)
        if done < total and js.should_stop():
            raise HubStopped("stopped between two files; nothing was stored")

    return on_progress


def cancel_hub_job(r: redis.Redis, job_id: str) -> str:
    """Ask a Hub download to stop (queued: at once; running: before its next file)."""
    return HUB.cancel(r, job_id)


__all__ = [
    "HUB",
    "HubKind",
    "HubNotFound",
    "HubSpec",
    "HubStopped",
    "cancel_hub_job",
    "create_hub_job",
    "hub_detail",
    "hub_view",
    "progress_callback",
]
