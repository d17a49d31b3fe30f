"""The job kernel: what every kind of job (a run, a fit, the kinds added later) shares.

A *kind* is one :class:`JobKind` registered with :func:`register`. It declares its Redis
keys, how a job of it is checked against the server's limits (:mod:`service.jobs.limits`)
and queued, how a worker executes it, how it is summarised in a list and how it is
cancelled; the kernel does the rest the same way for every kind:

- :func:`create_job` — checks the spec against :class:`~service.jobs.limits.JobLimits`
  (``kind.check``: caps, quota, names; nothing is stored when it fails), stores the job's
  hash (``spec``, ``names``, ``status: queued``, ``created``, the time limit when the kind
  has one, and the kind's fields) and its two index entries in one transaction, then sends its worker task;
- :func:`cancel_job`, :func:`list_jobs`, :func:`job_hash`;
- :class:`JobState` — the worker's side of a worker-held job: start, progress, sign of
  life, cancel flag, time limit, end (Lua scripts in ``service/runstate/lua/job_*.lua``);
- the reaper's rules (:meth:`JobKind.reap`, :meth:`JobKind.seed`, :meth:`JobKind.prune`,
  called for every registered kind by :class:`service.runstate.reaper.Reaper`).

Two families of kinds exist. A **run** (:mod:`service.jobs.run`) is drained by many
workers point by point through leases (:mod:`service.runstate`), so a dead worker's points
are leased again. A **worker-held** kind (:class:`WorkerJobKind`: a fit) runs in one
worker from start to end, its state (weights, optimiser) only in that worker's memory: a
dead worker's job ends ``failed`` saying so, and is not resumed. Statuses are
:mod:`basin.status`'s for both.

Adding a kind: ``docs/service.md`` ("Adding a job kind").
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, cast

import redis

from basin import strict_json
from basin.status import CANCELLED, FAILED, QUEUED, RUNNING, TERMINAL
from service.jobs.limits import JobLimits
from service.runstate.keys import JobKeys, job_active_key, job_index_key, prune_index
from service.runstate.queue import script
from service.store import Conflict, NotFound

logger = logging.getLogger(__name__)


class JobNotFound(NotFound):
    """No job of that kind with that id (404)."""


class JobConflict(Conflict):
    """The job's state refuses the request, e.g. cancelling an ended job (409)."""


@dataclass
class ReapReport:
    """What one reaper pass did to the jobs of one kind (job ids)."""

    failed: list[str] = field(default_factory=list)  # worker died, or past the time limit
    expiring: list[str] = field(default_factory=list)  # ended: keys given their TTL
    forgotten: list[str] = field(default_factory=list)  # gone from Redis (expired, deleted)


@dataclass(frozen=True)
class ReapContext:
    """What a reaper pass gives every kind: the live workers' heartbeats, the grace a
    worker-held job's worker has to show a sign of life, and the TTL of ended jobs' keys."""

    alive: list[dict]
    grace_s: float
    finished_ttl_s: int | None = None
    store: Any = None
    send_drain: Callable[[str], None] | None = None
    point_limit_s: float = 0.0
    queued_grace_s: float = 10.0
    #: Send a worker task ``(name, args)`` again (a re-queued tune member); None: cannot.
    send_job: Callable[[str, list[str]], None] | None = None


class JobKind:
    """One kind of job. Subclass it (or :class:`WorkerJobKind`) and :func:`register` an instance."""

    #: The kind's name: ``run``, ``fit``, ... (also its Redis key prefix: ``basin:<name>:<id>``).
    name: ClassVar[str]
    #: What a job of this kind is called in messages ("run", "curve fit").
    label: ClassVar[str] = ""

    @property
    def index_key(self) -> str:
        """Sorted set id → created of every job of the kind Redis has."""
        return job_index_key(self.name)

    @property
    def active_key(self) -> str:
        """Sorted set id → created of the jobs the reaper still visits."""
        return job_active_key(self.name)

    def hash_key(self, job_id: str) -> str:
        return JobKeys(self.name, job_id).hash

    def keys(self, job_id: str) -> list[str]:
        """Every Redis key of one job (deleted or expired together)."""
        return [self.hash_key(job_id)]

    # -- creation ---------------------------------------------------------------------------
    def check(self, spec: Any, limits: JobLimits, store: Any, names: dict[str, str]) -> list[str]:
        """One line per limit ``spec`` breaks (caps, quota, a name the job would give);
        :func:`create_job` refuses the job with all of them before storing anything."""
        return []

    def fields(self, spec: Any, limits: JobLimits) -> dict[str, Any]:
        """Hash fields of a new job besides spec, names, status, created, time_limit_s."""
        return {}

    def time_limit_s(self, spec: Any, limits: JobLimits) -> float:
        """The job's wall-clock limit (0 = none): the kernel stores it with the job."""
        return 0.0

    def recorded(self, fields: dict[str, Any]) -> dict[str, Any]:
        """The creator's extra hash ``fields`` as the job records them (a run drops what its
        share link must not reveal); the same for every creator of the kind."""
        return fields

    def prepare(self, pipe: Any, job_id: str, spec: Any) -> None:
        """Extra writes in the creating transaction (a run's todo list)."""

    def send(self, r: redis.Redis, redis_url: str, queue: str, job_id: str) -> None:
        """Queue the worker task(s) that execute the job."""
        raise NotImplementedError

    # -- reading, cancelling ----------------------------------------------------------------
    def summarise(self, job_id: str, h: dict[str, Any], *, public_url: str = "") -> dict[str, Any]:
        """One entry of the kind's list, from its hash."""
        return {
            "id": job_id,
            "kind": self.name,
            "status": h.get("status"),
            "created": _f(h.get("created")),
        }

    def not_found(self, job_id: str) -> JobNotFound:
        return JobNotFound(f"no {self.label or self.name} with id {job_id!r}")

    def cancel(self, r: redis.Redis, job_id: str, *, store: Any = None) -> str:
        raise NotImplementedError

    # -- the reaper -------------------------------------------------------------------------
    def prune(self, r: redis.Redis, batch: int = 200) -> int:
        """Drop from the kind's index the oldest ids whose hash expired (or was deleted)."""
        return prune_index(r, self.index_key, self.hash_key, batch)

    def seed(self, r: redis.Redis) -> int:
        """Add to the active set the jobs created before it existed that still need the reaper."""
        return 0

    def reap(self, r: redis.Redis, ctx: ReapContext) -> Any:
        """One reaper pass over the kind's active jobs."""
        return ReapReport()


#: The registered kinds, by name.
KINDS: dict[str, JobKind] = {}


K = TypeVar("K", bound=JobKind)


def register(kind: K) -> K:
    """Register ``kind`` (its name must be new, or the same kind class again)."""
    old = KINDS.get(kind.name)
    if old is not None and type(old) is not type(kind):
        raise ValueError(
            f"a job kind named {kind.name!r} is already registered ({type(old).__name__})"
        )
    KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    KINDS.pop(name, None)


def get_kind(name: str) -> JobKind:
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"no job kind {name!r} (registered: {', '.join(sorted(KINDS))})") from None


def kinds() -> list[JobKind]:
    return list(KINDS.values())


# ---- the kernel's operations, the same for every kind --------------------------------------


def create_job(
    r: redis.Redis,
    kind: JobKind,
    spec: Any,
    *,
    limits: JobLimits,
    redis_url: str,
    queue: str,
    names: dict[str, str] | None = None,
    store: Any = None,
    fields: dict[str, Any] | None = None,
) -> str:
    """Check ``spec`` against ``limits`` (``kind.check``; :class:`basin.errors.InvalidSpec`
    naming every limit broken, nothing stored), store a queued job and send its task;
    returns its id: 16 random bytes, URL-safe (an id is a capability, like a share link)."""
    from basin.errors import InvalidSpec

    names = {} if names is None else names
    over = kind.check(spec, limits, store, names)
    if over:
        raise InvalidSpec(f"invalid {kind.label or kind.name} spec: " + "; ".join(over))
    job_id = secrets.token_urlsafe(16)
    created = time.time()
    dump = spec.model_dump(mode="json") if hasattr(spec, "model_dump") else spec
    pipe = r.pipeline(transaction=True)
    mapping: dict[Any, Any] = {
        "spec": json.dumps(dump),
        "names": json.dumps(names),
        "status": QUEUED,
        "created": repr(created),
        **kind.fields(spec, limits),
        **kind.recorded(dict(fields or {})),
    }
    pipe.hset(kind.hash_key(job_id), mapping=mapping)
    limit_s = float(kind.time_limit_s(spec, limits))
    if limit_s > 0:
        pipe.hset(kind.hash_key(job_id), "time_limit_s", repr(limit_s))
    kind.prepare(pipe, job_id, spec)
    pipe.zadd(kind.index_key, {job_id: created})
    pipe.zadd(kind.active_key, {job_id: created})
    pipe.execute()
    kind.send(r, redis_url, queue, job_id)
    return job_id


def job_hash(r: redis.Redis, kind: JobKind, job_id: str) -> dict[str, str]:
    """The job's hash; the kind's not-found error (404) when Redis has no such job."""
    h = cast("dict[str, str]", r.hgetall(kind.hash_key(job_id)))
    if not h or "spec" not in h:
        raise kind.not_found(job_id)
    return h


def list_jobs(
    r: redis.Redis, kind: JobKind, *, public_url: str = "", fields: Iterable[str] | None = None
) -> list[dict[str, Any]]:
    """Every job of ``kind`` Redis still has, newest first, as ``kind.summarise`` writes them."""
    ids = cast("list[str]", r.zrevrange(kind.index_key, 0, -1))
    pipe = r.pipeline()
    want = list(fields) if fields is not None else None
    for job_id in ids:
        if want is None:
            pipe.hgetall(kind.hash_key(job_id))
        else:
            pipe.hmget(kind.hash_key(job_id), want)
    out: list[dict[str, Any]] = []
    for job_id, vals in zip(ids, pipe.execute(), strict=True):
        h = vals if want is None else dict(zip(want, vals, strict=True))
        if not h or h.get("spec") is None:  # expired between the two reads
            continue
        out.append(kind.summarise(job_id, h, public_url=public_url))
    return out


def cancel_job(r: redis.Redis, kind: JobKind, job_id: str, *, store: Any = None) -> str:
    """Ask a job to stop (``kind.cancel``): the kind's not-found (404) or conflict (409)."""
    return kind.cancel(r, job_id, store=store)


# ---- worker-held kinds ----------------------------------------------------------------------


class WorkerJobKind(JobKind):
    """A kind whose job one worker runs from start to end (a fit; the next: tune, study, subspace).

    Declares, besides :class:`JobKind`'s: :attr:`executor` (``"module:function"``, called by
    the worker as ``function(job_id, state, worker)`` with the job's :class:`JobState`),
    :attr:`task` (the Celery task that carries it; :data:`service.tasks.JOB_TASK` by
    default, whose payload is ``[kind, id]``) and :attr:`log_name` (its progress list).
    The kernel gives it: cancel (a queued job ends at once, a running one is flagged),
    start / sign of life / end, the time limit (the worker stops itself; the reaper fails a
    job past it), the dead-worker rule, expiry, prune and seed.
    """

    executor: ClassVar[str]
    task: ClassVar[str] = ""
    log_name: ClassVar[str] = "log"

    def job_keys(self, job_id: str) -> JobKeys:
        return JobKeys(self.name, job_id, self.log_name)

    def state(self, r: redis.Redis, job_id: str) -> JobState:
        """The worker's handle on one job (a kind may return a :class:`JobState` subclass)."""
        return JobState(r, self, job_id)

    def keys(self, job_id: str) -> list[str]:
        return self.job_keys(job_id).all()

    def time_limit_s(self, spec: Any, limits: JobLimits) -> float:
        return float(limits.time_limit_s or 0.0)

    def send(self, r: redis.Redis, redis_url: str, queue: str, job_id: str) -> None:
        from service.tasks import JOB_TASK, send_task

        if self.task and self.task != JOB_TASK:
            send_task(redis_url, queue, self.task, [job_id])
        else:
            send_task(redis_url, queue, JOB_TASK, [self.name, job_id])

    def cancel(self, r: redis.Redis, job_id: str, *, store: Any = None) -> str:
        out = r.eval(script("job_cancel"), 1, self.hash_key(job_id), repr(time.time()))
        if out == "gone":
            raise self.not_found(job_id)
        if out != "ok":
            raise JobConflict(f"{self.label or self.name} {job_id} is already {out}")
        return CANCELLED

    def holder(self, alive: list[dict]) -> set[str]:
        """The ids of this kind's jobs that live workers announce."""
        prefix = self.name + ":"
        out = {
            str(w["job"])[len(prefix) :]
            for w in alive
            if str(w.get("job") or "").startswith(prefix)
        }
        if self.name == "fit":  # heartbeats before the kernel named the job "fit": <id>
            out |= {str(w["fit"]) for w in alive if w.get("fit")}
        return out

    def dead_worker_message(self, worker: str | None, h: dict[str, Any], grace_s: float) -> str:
        who = f"its worker ({worker})" if worker else "its worker"
        return (
            f"{who} died or was cut off: no sign of life for {grace_s:.0f} s, at step "
            f"{int(h.get('step') or 0)} of {int(h.get('total') or 0)}. The {self.label or self.name} "
            "was not resumed (its state lived in that worker's memory); start it again with the same spec"
        )

    def overdue_message(self, h: dict[str, Any]) -> str:
        return time_limit_message(
            self.label or self.name,
            float(h.get("time_limit_s") or 0),
            int(h.get("step") or 0),
            int(h.get("total") or 0),
        )

    def seed(self, r: redis.Redis) -> int:
        ids = cast("list[tuple[str, float]]", r.zrange(self.index_key, 0, -1, withscores=True))
        pipe = r.pipeline()
        for job_id, _ in ids:
            pipe.ttl(self.hash_key(job_id))
        added = 0
        for (job_id, created), ttl in zip(ids, pipe.execute(), strict=True):
            if ttl == -1:  # exists, no TTL yet
                added += cast(int, r.zadd(self.active_key, {job_id: created}, nx=True))
        return added

    def reap(self, r: redis.Redis, ctx: ReapContext) -> ReapReport:
        """Fail running jobs whose worker died (no live heartbeat names it and its ``beat``
        is older than the grace) or that ran past their time limit (plus the grace); give
        ended jobs' keys the TTL of ended runs; forget the gone ones."""
        out = ReapReport()
        self.prune(r)
        ids = cast("list[str]", r.zrange(self.active_key, 0, -1))
        if not ids:
            return out
        held = self.holder(ctx.alive)
        for job_id in ids:
            hk = self.hash_key(job_id)
            status, step, total, worker, limit = cast(
                "list[str | None]",
                r.hmget(hk, ["status", "step", "total", "worker", "time_limit_s"]),
            )
            if status is None:
                r.zrem(self.active_key, job_id)
                out.forgotten.append(job_id)
                continue
            h = {"step": step, "total": total, "time_limit_s": limit}
            if status == RUNNING:
                over = r.eval(
                    script("job_overdue"),
                    1,
                    hk,
                    repr(float(ctx.grace_s)),
                    repr(time.time()),
                    self.overdue_message(h),
                )
                if over == "failed":
                    logger.warning(
                        "%s %s ran past its time limit of %s s; failed it", self.name, job_id, limit
                    )
                    out.failed.append(job_id)
                    status = FAILED
            if status == RUNNING and job_id not in held:
                msg = self.dead_worker_message(worker, h, ctx.grace_s)
                if (
                    r.eval(
                        script("job_fail_dead"),
                        1,
                        hk,
                        repr(float(ctx.grace_s)),
                        repr(time.time()),
                        msg,
                    )
                    == "failed"
                ):
                    logger.warning(
                        "%s %s: worker %s gave no sign of life for %.0f s; failed it",
                        self.name,
                        job_id,
                        worker,
                        ctx.grace_s,
                    )
                    out.failed.append(job_id)
                    status = FAILED
            if status in TERMINAL:
                if ctx.finished_ttl_s:
                    pipe = r.pipeline(transaction=True)
                    for key in self.keys(job_id):
                        pipe.expire(key, int(ctx.finished_ttl_s))
                    pipe.execute()
                r.zrem(self.active_key, job_id)
                out.expiring.append(job_id)
        return out


def time_limit_message(what: str, limit_s: float, step: int, total: int) -> str:
    """The error a job that ran past its time limit ends with."""
    return (
        f"the {what} ran past this server's time limit of {limit_s:.0f} s (BASIN_JOB_TIME_LIMIT_S) "
        f"at step {step} of {total}; nothing was stored. Ask for fewer steps, or raise the limit"
    )


class JobState:
    """The worker's side of one worker-held job: start, progress, sign of life, the cancel
    flag and the time limit, end. ``clock`` (monotonic seconds) measures the time limit from
    :meth:`start`."""

    def __init__(
        self,
        r: redis.Redis,
        kind: WorkerJobKind,
        job_id: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.r, self.kind, self.id = r, kind, job_id
        self.k = kind.job_keys(job_id)
        self.clock = clock
        self._t0: float | None = None
        self.limit_s = 0.0
        self.timed_out = False

    def hash(self) -> dict[str, str]:
        return cast("dict[str, str]", self.r.hgetall(self.k.hash))

    def start(self, worker: str) -> str:
        """queued → running (``ok``), else the status found (``cancelled``, ``gone``, ...)."""
        out = str(self.r.eval(script("job_start"), 1, self.k.hash, repr(time.time()), worker))
        if out == "ok":
            self._t0 = self.clock()
            self.limit_s = float(self.r.hget(self.k.hash, "time_limit_s") or 0.0)
        return out

    def beat(self) -> str:
        """A sign of life (also called by the worker's heartbeat)."""
        return str(self.r.eval(script("job_beat"), 1, self.k.hash))

    def progress(self, step: int, entry: dict[str, Any] | None = None, **fields: Any) -> None:
        """Note step ``step`` (and ``fields``), append ``entry`` to the log, beat."""
        pipe = self.r.pipeline(transaction=True)
        if entry is not None:
            pipe.rpush(self.k.log, strict_json.dumps(entry))  # a diverged loss (nan) → null
        mapping: dict[Any, Any] = {"step": step, **fields}
        pipe.hset(self.k.hash, mapping=mapping)
        pipe.eval(script("job_beat"), 1, self.k.hash)
        pipe.execute()

    def over_time(self) -> bool:
        """Whether the job has run past its time limit (checked by :meth:`should_stop`)."""
        if self._t0 is not None and self.limit_s > 0 and self.clock() - self._t0 > self.limit_s:
            self.timed_out = True
        return self.timed_out

    def should_stop(self) -> bool:
        """Stop before the next step: cancel asked, past the time limit, or no longer
        ``running`` (the reaper failed it while this worker was cut off, or it expired)."""
        if self.over_time():
            return True
        cancel, status = self.r.hmget(self.k.hash, ["cancel", "status"])
        return cancel == "1" or status != RUNNING

    def running(self) -> bool:
        return self.r.hget(self.k.hash, "status") == RUNNING

    def set(self, **fields: Any) -> None:
        self.r.hset(
            self.k.hash,
            mapping={
                k: strict_json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in fields.items()
            },
        )

    def end(self, status: str, error: str = "") -> str:
        """End the job (``ok``) unless it already ended (then its status)."""
        return str(self.r.eval(script("job_end"), 1, self.k.hash, status, repr(time.time()), error))


def beat_job(r: redis.Redis, kind_name: str, job_id: str) -> str:
    """Record a sign of life of the worker running ``kind_name`` job ``job_id``."""
    return str(r.eval(script("job_beat"), 1, JobKeys(kind_name, job_id).hash))


def _f(v: Any) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


__all__ = [
    "KINDS",
    "JobConflict",
    "JobKind",
    "JobNotFound",
    "JobState",
    "ReapContext",
    "ReapReport",
    "WorkerJobKind",
    "beat_job",
    "cancel_job",
    "create_job",
    "get_kind",
    "job_hash",
    "kinds",
    "list_jobs",
    "register",
    "time_limit_message",
    "unregister",
]
