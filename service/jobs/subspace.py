"""The ``subspace`` job kind: one stage of the delta-tuning subspace (:mod:`basin.subspace`),
queued by ``POST /api/subspaces`` and run by one worker (:mod:`workers.subspacejob`). A
worker-held kind (:class:`~service.jobs.kernel.WorkerJobKind`): cancel, start, sign of
life, time limit, end, the reaper's rules, expiry are the kernel's.

Its spec is a :class:`basin.subspace.spec.FitSpec` (``kind: subspace_fit``) or an
:class:`~basin.subspace.spec.OptimiseSpec` (``kind: subspace_optimise``) with every
reference a store id (checkpoints, datasets; an optimise's ``projections`` an artefact).

============================ ====== ==================================================
``basin:subspace:<id>``      hash   the kernel's fields and step, total, artefact (the
                                    projections' store id, a fit), adapters (JSON
                                    method → store id of each decoded adapter, an
                                    optimise), report (JSON: the stage's table)
``basin:subspace:<id>:losses`` list one JSON entry per step: a fit's ``{step, loss,
                                    dist, task}`` (per task/method), an optimise's
                                    ``{step, task}``
============================ ====== ==================================================

The server's caps: steps (``BASIN_MAX_TRAIN_STEPS``), examples, length and batch size
(the same as for runs and fits), the time limit (``BASIN_JOB_TIME_LIMIT_S``), and the
store's quota before anything is written.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar

import redis
from pydantic import Field, TypeAdapter

from basin.subspace.spec import FitSpec, OptimiseSpec
from service.jobs.kernel import (
    JobNotFound,
    JobState,
    WorkerJobKind,
    _f,
    cancel_job,
    create_job,
    job_hash,
    list_jobs,
    register,
)
from service.jobs.limits import Caps, JobLimits, over_data_limits

SubspaceSpec = Annotated[FitSpec | OptimiseSpec, Field(discriminator="kind")]
SPEC = TypeAdapter(SubspaceSpec)
LIST_FIELDS = (
    "spec",
    "names",
    "status",
    "step",
    "total",
    "created",
    "finished",
    "error",
    "artefact",
    "adapters",
)


def parse_subspace_spec(data: Any) -> FitSpec | OptimiseSpec:
    """A subspace job's spec (``kind`` says the stage); pydantic's errors as one :class:`InvalidSpec`."""
    from pydantic import ValidationError

    from basin.errors import InvalidSpec
    from basin.spec import format_validation_error

    if not isinstance(data, dict) or data.get("kind") not in ("subspace_fit", "subspace_optimise"):
        raise InvalidSpec(
            "invalid subspace spec: a JSON object with kind 'subspace_fit' or 'subspace_optimise'"
        )
    try:
        return SPEC.validate_python(data)
    except ValidationError as e:
        raise InvalidSpec(
            format_validation_error(e).replace("invalid spec", "invalid subspace spec", 1)
        ) from None


class SubspaceNotFound(JobNotFound):
    def __init__(self, job_id: str) -> None:
        super().__init__(
            f"no subspace job with id {job_id!r} (an ended job is forgotten BASIN_FINISHED_RUN_TTL_S "
            "after it ends; its projections and adapters stay in the store)"
        )


class SubspaceKind(WorkerJobKind):
    name: ClassVar[str] = "subspace"
    label: ClassVar[str] = "subspace"
    executor: ClassVar[str] = "workers.subspacejob:execute_subspace"
    log_name: ClassVar[str] = "losses"

    def check(self, spec: Any, limits: JobLimits, store: Any, names: dict[str, str]) -> list[str]:
        caps = Caps()
        caps.cap("steps:", spec.steps, limits.train_steps, "BASIN_MAX_TRAIN_STEPS")
        over_data_limits(
            caps,
            limits,
            examples=max(spec.train_examples, spec.eval_examples),
            length=spec.max_length,
            batch_size=spec.batch_size,
        )
        if spec.kind == "subspace_fit":  # every solution is a checkpoint it loads
            n = sum(len(t.solutions) for t in spec.tasks.values())
            caps.cap("checkpoints (solutions):", n, limits.checkpoints, "BASIN_MAX_CHECKPOINTS")
        out = caps.lines
        if store is not None and limits.store_bytes is not None:
            free = store.free_bytes(limits.store_bytes)
            if free is not None and free <= 0:
                out.append(
                    "the store has no room left under its quota (BASIN_MAX_STORE_BYTES) for the projections "
                    "or decoded adapters this job writes"
                )
        return out

    def fields(self, spec: Any, limits: JobLimits) -> dict[str, Any]:
        return {"step": 0, "total": spec.steps}

    def not_found(self, job_id: str) -> JobNotFound:
        return SubspaceNotFound(job_id)

    def state(self, r: redis.Redis, job_id: str) -> JobState:
        return JobState(r, self, job_id)

    def summarise(self, job_id: str, h: dict[str, Any], *, public_url: str = "") -> dict[str, Any]:
        spec = json.loads(h["spec"])
        return {
            "id": job_id,
            "url": f"{public_url}/subspaces/{job_id}",
            "status": h.get("status"),
            "stage": spec.get("kind"),
            "step": int(h.get("step") or 0),
            "total": int(h.get("total") or 0),
            "created": _f(h.get("created")),
            "finished": _f(h.get("finished")),
            "error": h.get("error") or None,
            "artefact": h.get("artefact") or None,
            "adapters": json.loads(h.get("adapters") or "{}"),
        }


SUBSPACE = register(SubspaceKind())


def create_subspace(
    r: redis.Redis,
    spec: FitSpec | OptimiseSpec,
    *,
    names: dict[str, str],
    redis_url: str,
    queue: str,
    limits: JobLimits | None = None,
    store: Any = None,
) -> str:
    """Check the job against ``limits``, store it queued and send its task; returns its id."""
    return create_job(
        r,
        SUBSPACE,
        spec,
        limits=limits or JobLimits(),
        redis_url=redis_url,
        queue=queue,
        names=names,
        store=store,
    )


def subspace_detail(r: redis.Redis, job_id: str) -> dict[str, Any]:
    """What ``GET /api/subspaces/{id}`` answers: status, step / total, the losses so far, the
    projections' artefact id, the decoded adapters' ids, the stage's table once done."""
    h = job_hash(r, SUBSPACE, job_id)
    k = SUBSPACE.job_keys(job_id)
    return {
        "id": job_id,
        "status": h.get("status"),
        "step": int(h.get("step") or 0),
        "total": int(h.get("total") or 0),
        "losses": [json.loads(x) for x in r.lrange(k.log, 0, -1)],
        "error": h.get("error") or None,
        "artefact": h.get("artefact") or None,
        "adapters": json.loads(h.get("adapters") or "{}"),
        "report": json.loads(h.get("report") or "null"),
        "spec": json.loads(h["spec"]),
        "names": json.loads(h.get("names") or "{}"),
        "created": _f(h.get("created")),
        "started": _f(h.get("started")),
        "finished": _f(h.get("finished")),
        "time_limit_s": _f(h.get("time_limit_s")) or None,
    }


def list_subspaces(r: redis.Redis, *, public_url: str = "") -> list[dict[str, Any]]:
    return list_jobs(r, SUBSPACE, public_url=public_url, fields=LIST_FIELDS)


def cancel_subspace(r: redis.Redis, job_id: str) -> str:
    return cancel_job(r, SUBSPACE, job_id)


__all__ = [
    "SUBSPACE",
    "SubspaceKind",
    "SubspaceNotFound",
    "cancel_subspace",
    "create_subspace",
    "list_subspaces",
    "parse_subspace_spec",
    "subspace_detail",
]
