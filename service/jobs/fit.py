"""The ``fit`` job kind: a curve fit (:class:`basin.fit.FitSpec`, references resolved to
store ids), queued by ``POST /api/fits`` and run by one worker (:mod:`workers.fitjob`,
Celery task :data:`service.tasks.FIT_TASK`). A worker-held kind
(:class:`~service.jobs.kernel.WorkerJobKind`): cancel, start, sign of life, time limit,
end, the reaper's rules, expiry, prune and seed are the kernel's.

============================ ====== ==================================================
``basin:fit:<id>``           hash   the kernel's fields (spec, names, status, created,
                                    started, finished, error, cancel, worker, beat,
                                    begun, time_limit_s) and step, total, stride,
                                    origin (the run it was started from, if any),
                                    eta_s, control (store id of the fitted control
                                    checkpoint), controls, runs (JSON {line, curve}: the
                                    two evaluation runs queued when it ended),
                                    final_loss
``basin:fit:<id>:losses``    list   one JSON {step, loss} per ``stride`` training steps:
                                    the mean loss of the steps since the previous entry
                                    (stride 1, every step, up to :data:`MAX_LOSSES` steps)
``basin:fits``               zset   fit id → created
``basin:fits:active``        zset   fit id → created: fits the reaper still visits
============================ ====== ==================================================

What the kernel checks before a fit is stored (:meth:`FitKind.check`): the server's caps on
the fit itself (steps ``BASIN_MAX_TRAIN_STEPS``, examples, length, batch size, the scope's
length) and on both evaluation runs it will queue when it ends (the same caps as
``POST /api/runs``), that the control checkpoint(s) it will write fit under the store's
quota, and that the name it will give them is a valid checkpoint name. The worker checks
the quota again before it writes, and stops at the time limit (``BASIN_JOB_TIME_LIMIT_S``).

A dead worker: the fit ends ``failed`` saying so, and is not resumed (its control point
and optimiser lived in that worker's memory; a fit that killed its worker, out of memory,
would kill the next one too). Once ended, its keys get the TTL of ended runs; the control
checkpoint and the two evaluation runs stay (they live in the store).
"""

from __future__ import annotations

import json
import math
from typing import Any, ClassVar

import redis

from basin.errors import BasinError
from basin.fit import FitSpec, curve_run_data
from basin.spec import parse_spec
from basin.status import RUNNING, TERMINAL
from service.jobs.kernel import (
    JobConflict,
    JobNotFound,
    JobState,
    ReapContext,
    ReapReport,
    WorkerJobKind,
    _f,
    cancel_job,
    create_job,
    job_hash,
    list_jobs,
    register,
)
from service.jobs.limits import Caps, JobLimits, over_data_limits, over_run_limits, scope_over_limit
from service.runstate.keys import ACTIVE_FITS_KEY, FITS_KEY, FitKeys
from service.tasks import FIT_TASK

#: A fit's loss log keeps at most about this many entries (``stride`` = ceil(steps / this)).
MAX_LOSSES = 1000
FIT_TERMINAL = TERMINAL
#: The hash fields a fits list reads.
LIST_FIELDS = (
    "spec",
    "names",
    "status",
    "step",
    "total",
    "created",
    "finished",
    "final_loss",
    "error",
    "control",
    "runs",
    "origin",
)


class FitNotFound(JobNotFound):
    """No fit with that id (404)."""

    def __init__(self, fit_id: str) -> None:
        super().__init__(
            f"no fit with id {fit_id!r} (an ended fit is forgotten BASIN_FINISHED_RUN_TTL_S after it ends, "
            "like an ended run's live state; its control checkpoint and evaluation runs stay)"
        )


class FitConflict(JobConflict):
    """Cancel of a fit that has ended (409)."""


def control_names(spec: FitSpec, names: dict[str, str], fit_id: str) -> list[str]:
    """The store names of the control checkpoint(s) fit ``fit_id`` will write."""
    a_name, b_name = names.get(spec.a, spec.a[:12]), names.get(spec.b, spec.b[:12])
    base = f"{spec.name or 'fitted ' + spec.curve} {a_name}+{b_name} {fit_id[:8]}"
    n = spec.num_controls
    return [base] if n == 1 else [f"{base} bend {i + 1}" for i in range(n)]


def control_bytes(spec: FitSpec, store: Any) -> int:
    """About the bytes the fit's control checkpoint(s) take: θA's full weights (θA with its
    in-scope tensors replaced) per control; an adapter counts its base's weights too."""
    m = store.get_checkpoint(spec.a)
    size = int(m.get("size_bytes") or 0)
    if m.get("adapter") and m.get("base"):
        try:
            size += int(store.get_checkpoint(m["base"]).get("size_bytes") or 0)
        except Exception:  # the base is checked elsewhere
            pass
    return size * spec.num_controls


class FitKind(WorkerJobKind):
    name: ClassVar[str] = "fit"
    label: ClassVar[str] = "fit"
    executor: ClassVar[str] = "workers.fitjob:execute_fit"
    task: ClassVar[str] = FIT_TASK
    log_name: ClassVar[str] = "losses"

    def check(self, spec: Any, limits: JobLimits, store: Any, names: dict[str, str]) -> list[str]:
        caps = Caps()
        caps.cap("steps:", spec.steps, limits.train_steps, "BASIN_MAX_TRAIN_STEPS")
        over_data_limits(
            caps,
            limits,
            examples=spec.max_examples,
            length=spec.max_length,
            batch_size=spec.batch_size,
        )
        out = caps.lines
        scope = scope_over_limit(spec.scope, limits)
        if scope:
            out.append(scope)
        evals = [("line", True)] + ([("curve", False)] if spec.num_controls == 1 else [])
        for label, line in evals:
            try:
                run = parse_spec(curve_run_data(spec, spec.a, line=line))
            except BasinError as e:
                out.append(f"its {label} evaluation run: {e}")
                continue
            said = ("max_length:", "batch_size:") + (
                ("max_examples:",) if spec.eval_size == spec.max_examples else ()
            )  # said once, for the fit itself; eval_max_examples may differ
            out += [
                f"its {label} evaluation run's {x}"
                for x in over_run_limits(run, limits)
                if not x.startswith(said)
            ]
        from service.store import _check_name

        for name in control_names(spec, names, "x" * 22):
            try:
                _check_name(name, "checkpoint")
            except BasinError:
                out.append(
                    f"name: the fitted control would be named {name[:80]!r}…, not a valid checkpoint "
                    "name (1-200 printable characters, no '/' or '\\'): shorten 'name' or the endpoints' names"
                )
                break
        if store is not None and limits.store_bytes is not None:
            need, free = control_bytes(spec, store), store.free_bytes(limits.store_bytes)
            if free is not None and need > free:
                out.append(
                    f"the fitted control checkpoint(s) need about {need:,} bytes but the store has {free:,} "
                    "left under its quota (BASIN_MAX_STORE_BYTES)"
                )
        return out

    def fields(self, spec: Any, limits: JobLimits) -> dict[str, Any]:
        return {
            "step": 0,
            "total": spec.steps,
            "stride": max(1, math.ceil(spec.steps / MAX_LOSSES)),
        }

    def not_found(self, job_id: str) -> JobNotFound:
        return FitNotFound(job_id)

    def state(self, r: redis.Redis, job_id: str) -> FitState:
        return FitState(r, job_id)

    def cancel(self, r: redis.Redis, job_id: str, *, store: Any = None) -> str:
        try:
            return super().cancel(r, job_id, store=store)
        except JobConflict as e:
            raise FitConflict(str(e)) from None

    def summarise(self, job_id: str, h: dict[str, Any], *, public_url: str = "") -> dict[str, Any]:
        spec, names = json.loads(h["spec"]), json.loads(h.get("names") or "{}")
        return {
            "id": job_id,
            "url": f"{public_url}/fits/{job_id}",
            "status": h.get("status"),
            "a": spec.get("a"),
            "b": spec.get("b"),
            "a_name": names.get(spec.get("a"), spec.get("a")),
            "b_name": names.get(spec.get("b"), spec.get("b")),
            "curve": spec.get("curve"),
            "bends": spec.get("bends"),
            "step": int(h.get("step") or 0),
            "total": int(h.get("total") or 0),
            "created": _f(h.get("created")),
            "finished": _f(h.get("finished")),
            "final_loss": _f(h.get("final_loss")),
            "error": h.get("error") or None,
            "control": h.get("control") or None,
            "runs": json.loads(h.get("runs") or "{}"),
            "origin": h.get("origin") or None,
        }

    def reap(self, r: redis.Redis, ctx: ReapContext) -> ReapReport:
        return super().reap(r, ctx)


FIT = register(FitKind())


# ---- the API's side ------------------------------------------------------------------------


def create_fit(
    r: redis.Redis,
    spec: FitSpec,
    *,
    names: dict[str, str],
    redis_url: str,
    queue: str,
    limits: JobLimits | None = None,
    store: Any = None,
    origin: str | None = None,
) -> str:
    """Check the fit against ``limits`` (the kernel's :meth:`FitKind.check`), store it queued
    and send its task; returns its id (a capability, like a run's). ``origin``: the run it
    was started from (its share link may show the fit)."""
    return create_job(
        r,
        FIT,
        spec,
        limits=limits or JobLimits(),
        redis_url=redis_url,
        queue=queue,
        names=names,
        store=store,
        fields={"origin": origin} if origin else None,
    )


def fit_detail(r: redis.Redis, fit_id: str) -> dict[str, Any]:
    """What ``GET /api/fits/{id}`` answers; :class:`FitNotFound` when Redis has no such fit."""
    k = FitKeys(fit_id)
    h = job_hash(r, FIT, fit_id)
    losses = [json.loads(x) for x in r.lrange(k.losses, 0, -1)]
    return {
        "id": fit_id,
        "status": h.get("status"),
        "step": int(h.get("step") or 0),
        "total": int(h.get("total") or 0),
        "eta_s": _f(h.get("eta_s")) if h.get("status") == RUNNING else None,
        "losses": losses,
        "loss_stride": int(h.get("stride") or 1),
        "error": h.get("error") or None,
        "control": h.get("control") or None,
        "runs": json.loads(h.get("runs") or "{}"),
        "final_loss": _f(h.get("final_loss")),
        "spec": json.loads(h["spec"]),
        "names": json.loads(h.get("names") or "{}"),
        "created": _f(h.get("created")),
        "started": _f(h.get("started")),
        "finished": _f(h.get("finished")),
        "time_limit_s": _f(h.get("time_limit_s")) or None,
        "origin": h.get("origin") or None,
    }


def list_fits(r: redis.Redis, *, public_url: str = "") -> list[dict[str, Any]]:
    """What ``GET /api/fits`` answers: every fit Redis still has, newest first — id, url,
    status, the endpoints' names, curve type, step / total, created, finished, final
    training loss, error, the control checkpoint's id and the evaluation runs' ids."""
    return list_jobs(r, FIT, public_url=public_url, fields=LIST_FIELDS)


def cancel_fit(r: redis.Redis, fit_id: str) -> str:
    """Ask a fit to stop; :class:`FitConflict` when it has already ended."""
    return cancel_job(r, FIT, fit_id)


# ---- the worker's side ---------------------------------------------------------------------


class FitState(JobState):
    """The worker's side of one fit: the kernel's :class:`JobState` plus the loss log, one
    entry per ``stride`` steps (their mean loss)."""

    def __init__(self, r: redis.Redis, fit_id: str, **kw: Any) -> None:
        super().__init__(r, FIT, fit_id, **kw)
        self._window: list[float] = []
        self._stride: int | None = None

    def step(self, step: int, loss: float, eta_s: float | None) -> None:
        if self._stride is None:
            stride, total = self.r.hmget(self.k.hash, ["stride", "total"])
            self._stride, self._total = int(stride or 1), int(total or 0)
        self._window.append(float(loss))
        entry = None
        if step % self._stride == 0 or step >= self._total:
            entry = {"step": step, "loss": sum(self._window) / len(self._window)}
            self._window = []
        self.progress(step, entry, eta_s=repr(eta_s) if eta_s is not None else "")

    def cancelled(self) -> bool:
        """Whether the fit should stop (cancel, time limit, no longer running)."""
        return self.should_stop()


def beat_fit(r: redis.Redis, fit_id: str) -> str:
    """Record a sign of life of ``fit_id``'s worker (its heartbeat calls this)."""
    return FitState(r, fit_id).beat()


def reap_fits(
    r: redis.Redis,
    *,
    alive: list[dict] | None = None,
    grace_s: float,
    finished_ttl_s: int | None = None,
) -> ReapReport:
    """One reaper pass over the fits (the kernel's :meth:`WorkerJobKind.reap`)."""
    from service.runstate.reads import alive_workers

    ctx = ReapContext(
        alive=alive_workers(r) if alive is None else alive,
        grace_s=grace_s,
        finished_ttl_s=finished_ttl_s,
    )
    return FIT.reap(r, ctx)


def seed_active_fits(r: redis.Redis) -> int:
    return FIT.seed(r)


def prune_expired_fits(r: redis.Redis, batch: int = 200) -> int:
    return FIT.prune(r, batch)


__all__ = [
    "ACTIVE_FITS_KEY",
    "FIT",
    "FITS_KEY",
    "FIT_TERMINAL",
    "MAX_LOSSES",
    "FitConflict",
    "FitKeys",
    "FitKind",
    "FitNotFound",
    "FitState",
    "beat_fit",
    "cancel_fit",
    "control_bytes",
    "control_names",
    "create_fit",
    "fit_detail",
    "list_fits",
    "prune_expired_fits",
    "reap_fits",
    "seed_active_fits",
]
