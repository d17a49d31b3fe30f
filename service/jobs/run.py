"""The ``run`` job kind: a landscape run (:class:`basin.spec.RunSpec`, references resolved to
store ids), drained point by point by any number of workers through leases
(:mod:`service.runstate`: keys, Lua steps, reaper). Its key layout is older than the kernel's
generic one (``basin:run:<id>`` and its sub-keys, ``basin:runs``, ``basin:active``) and is
kept as it is: :class:`RunKind` declares it.

What the kernel checks before a run is stored (:meth:`RunKind.check`): the server's caps
(points, resolution, checkpoints, examples, length, batch size, the scope's length), the
same for a run the API queues and for the evaluation runs a fit queues when it ends.
"""

from __future__ import annotations

import json
import logging
from typing import Any, ClassVar

import redis

from basin.spec import RunSpec
from basin.status import CANCELLED
from service.jobs.kernel import JobConflict, JobKind, JobNotFound, ReapContext, register
from service.jobs.limits import JobLimits, over_run_limits, scope_over_limit
from service.runstate.keys import ACTIVE_KEY, RUNS_KEY, RunKeys, prune_index

logger = logging.getLogger(__name__)


#: Checkpoint tags whose value is another job's id — a capability: its link opens that job
#: (a fit's control carries ``fit``, a tune member ``tune``, a decoded adapter ``subspace_job``).
JOB_ID_TAGS = frozenset({"fit", "tune", "subspace_job"})


def public_tags(tags: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded store tags (checkpoint id → tags) without :data:`JOB_ID_TAGS`: anyone
    with the run's link reads them, and a link reveals its run, not the job that made one of
    its checkpoints (the checkpoint itself, which keeps them, needs the token to read)."""
    return {
        ident: {k: v for k, v in t.items() if k not in JOB_ID_TAGS} if isinstance(t, dict) else t
        for ident, t in (tags or {}).items()
    }


class RunKind(JobKind):
    name: ClassVar[str] = "run"
    label: ClassVar[str] = "run"

    @property
    def index_key(self) -> str:
        return RUNS_KEY

    @property
    def active_key(self) -> str:
        return ACTIVE_KEY

    def hash_key(self, job_id: str) -> str:
        return RunKeys(job_id).run

    def keys(self, job_id: str) -> list[str]:
        return RunKeys(job_id).all()

    def recorded(self, fields: dict[str, Any]) -> dict[str, Any]:
        if isinstance(fields.get("tags"), str):  # JSON {checkpoint id: store tags}
            fields["tags"] = json.dumps(public_tags(json.loads(fields["tags"])))
        return fields

    def check(self, spec: Any, limits: JobLimits, store: Any, names: dict[str, str]) -> list[str]:
        out = over_run_limits(spec, limits)
        scope = scope_over_limit(spec.scope, limits)
        return out + ([scope] if scope else [])

    def fields(self, spec: Any, limits: JobLimits) -> dict[str, Any]:
        from service.runstate.order import point_order

        return {"total": len(point_order(spec)), "done": 0, "evaluations": 0, "cached": 0}

    def prepare(self, pipe: Any, job_id: str, spec: Any) -> None:
        from service.runstate.order import point_order

        pipe.rpush(RunKeys(job_id).todo, *point_order(spec))

    def send(self, r: redis.Redis, redis_url: str, queue: str, job_id: str) -> None:
        from service.runstate.reads import alive_workers
        from service.tasks import send_drain

        total = int(r.hget(RunKeys(job_id).run, "total") or 1)
        n_tasks = min(total, max(2, 2 * len(alive_workers(r))))
        send_drain(redis_url, queue, job_id, n_tasks)

    def not_found(self, job_id: str) -> JobNotFound:
        return JobNotFound(f"no run with id {job_id!r}")

    def cancel(self, r: redis.Redis, job_id: str, *, store: Any = None) -> str:
        """End the run ``cancelled`` at once (``end.lua``); with a ``store`` its document is
        written so its share link outlives Redis."""
        from service.documents import persist_run
        from service.runstate.queue import RunQueue

        ended = RunQueue(r, job_id).end(CANCELLED)
        if ended.gone:
            raise self.not_found(job_id)
        if not ended.ok:
            if ended.status == "finishing":
                raise JobConflict(f"run {job_id} has every point and is being finished")
            raise JobConflict(f"run {job_id} is already {ended.status}")
        if store is not None:
            try:
                persist_run(r, store, job_id)
            except OSError as e:  # keep the cancel; the reaper retries the write
                logger.warning("storing cancelled run %s failed: %s", job_id, e)
        return CANCELLED

    def summarise(self, job_id: str, h: dict[str, Any], *, public_url: str = "") -> dict[str, Any]:
        spec = json.loads(h.get("spec") or "{}")
        return {
            "id": job_id,
            "kind": self.name,
            "url": f"{public_url}/runs/{job_id}",
            "status": h.get("status"),
            "spec": spec,
            "done": int(h.get("done") or 0),
            "total": int(h.get("total") or 0),
        }

    def prune(self, r: redis.Redis, batch: int = 200) -> int:
        return prune_index(r, RUNS_KEY, self.hash_key, batch)

    def seed(self, r: redis.Redis) -> int:
        from service.runstate.runs_reap import seed_active

        return seed_active(r)

    def reap(self, r: redis.Redis, ctx: ReapContext) -> Any:
        from service.runstate.runs_reap import reap

        assert ctx.send_drain is not None
        return reap(
            r,
            ctx.store,
            ctx.send_drain,
            grace_s=ctx.queued_grace_s,
            point_limit_s=ctx.point_limit_s,
            finished_ttl_s=ctx.finished_ttl_s,
            alive=ctx.alive,
        )


RUN = register(RunKind())


def run_limits_error(spec: RunSpec, limits: JobLimits) -> str | None:
    """``invalid spec: ...`` naming every cap ``spec`` exceeds, or ``None``."""
    over = over_run_limits(spec, limits)
    return "invalid spec: " + "; ".join(over) if over else None


__all__ = ["RUN", "RunKind", "run_limits_error"]
