"""The ``tune`` job kind: a family of fine-tuned checkpoints (:class:`basin.tune.TuneSpec`,
references resolved to store ids), queued by ``POST /api/tunes``; each **member** of the
family (one point of the product of the axes the spec varies: seed, data order, split,
method, learning rate) is one worker task, so a family trains on as many workers as there
are. Executor: :mod:`workers.tunejob`.

One job, many member tasks (not child jobs): the family is one job of the kernel (one id,
one link, one cancel, one entry in ``GET /api/tunes``), and each member has a small hash of
its own that the kernel's worker side treats like a worker-held job — the task is the
kernel's :data:`service.tasks.JOB_TASK` with payload ``["tune", "<id>.<i>"]``,
:func:`workers.jobs.run_job` starts it (``queued`` → ``running``, a cancelled or taken
member is skipped), the worker's heartbeat announces it (``job: tune:<id>.<i>``) and beats
its hash. Unlike a fit, a member whose worker died is **re-queued** (a new *attempt*) rather
than failed: a member's state is only its own training, which is deterministic, so the next
worker repeats it; its checkpoints are named by family, member and step, so a repeated save
finds the checkpoint the dead attempt stored instead of adding a second one, and only the
attempt that holds the member can end it (``tune_member_end.lua``): each member finishes
exactly once. Past :data:`MAX_ATTEMPTS` attempts the member fails (a member that kills its
worker, out of memory, would kill every worker).

============================== ====== ================================================
``basin:tune:<id>``            hash   the kernel's fields (spec, names, status, created,
                                      started, finished, error, cancel, time_limit_s)
                                      and members (N), total (steps of one member),
                                      stride, ended_members, done_members, name
``basin:tune:<id>.<i>``        hash   member i: spec (JSON {index, name, tags}),
                                      status, attempt, worker, lost_worker, beat,
                                      begun, started, finished, step, total,
                                      examples, eta_s, time_limit_s, cancel, error,
                                      checkpoints (JSON [{step, id, name}]), final
                                      (store id), metrics (JSON), cartography (store id
                                      of the checkpoint holding ``cartography.json``)
``basin:tune:<id>.<i>:losses`` list   one JSON {step, loss, examples} per ``stride``
                                      steps (their mean training loss)
``basin:tunes``                zset   tune id → created
``basin:tunes:active``         zset   tune id → created: families the reaper visits
============================== ====== ================================================

Limits (:meth:`TuneKind.check`, before anything is stored): steps of one member
(``BASIN_MAX_TRAIN_STEPS``), members of one family (``BASIN_MAX_TUNE_MEMBERS``), examples,
length and batch size (the shared caps), the store's quota for every checkpoint the family
will save, and the time limit of one member (``BASIN_JOB_TIME_LIMIT_S``: each member is
held by one worker; the worker stops it there and it fails saying so).
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, ClassVar, cast

import redis

from basin.status import CANCELLED, DONE, FAILED, QUEUED, RUNNING, TERMINAL
from service.jobs.kernel import (
    JobConflict,
    JobKind,
    JobNotFound,
    JobState,
    ReapContext,
    ReapReport,
    WorkerJobKind,
    _f,
    create_job,
    job_hash,
    list_jobs,
    register,
    time_limit_message,
)
from service.jobs.limits import Caps, JobLimits, over_data_limits
from service.runstate.keys import JobKeys
from service.runstate.queue import script

logger = logging.getLogger(__name__)

#: A member whose worker died is re-queued until it has had this many attempts.
MAX_ATTEMPTS = 3
#: A member's loss log keeps about this many entries (``stride`` = ceil(steps / this)).
MAX_LOSSES = 500
#: Members of one family when the settings say nothing (``BASIN_MAX_TUNE_MEMBERS``).
DEFAULT_MAX_MEMBERS = 64
#: The hash fields a tunes list reads.
LIST_FIELDS = (
    "spec",
    "names",
    "status",
    "created",
    "finished",
    "error",
    "members",
    "total",
    "ended_members",
    "done_members",
)


class TuneNotFound(JobNotFound):
    """No tune job with that id (404)."""

    def __init__(self, tune_id: str) -> None:
        super().__init__(
            f"no tune job with id {tune_id!r} (an ended tune job is forgotten BASIN_FINISHED_RUN_TTL_S "
            "after it ends; its checkpoints stay in the store, tagged with the family's name)"
        )


class TuneConflict(JobConflict):
    """Cancel of a tune job that has ended (409)."""


def member_ref(tune_id: str, index: int) -> str:
    """The id the kernel's worker side knows member ``index`` of ``tune_id`` by."""
    return f"{tune_id}.{index}"


def split_ref(ref: str) -> tuple[str, int]:
    tune_id, _, i = ref.rpartition(".")
    return tune_id, int(i)


def _g(spec: Any, name: str, default: Any = None) -> Any:
    if isinstance(spec, dict):
        return spec.get(name, default)
    return getattr(spec, name, default)


def member_dicts(spec: Any) -> list[dict[str, Any]]:
    """The family's members (:func:`basin.tune.members`) as JSON: index, name, tags."""
    from basin.tune import members

    out = []
    for m in members(spec):
        tags = {k: v for k, v in dict(_g(m, "tags") or {}).items() if v is not None}
        out.append({"index": int(_g(m, "index")), "name": str(_g(m, "name")), "tags": tags})
    return out


def family_name(spec: Any, tune_id: str) -> str:
    """What the job is called in lists: the spec's ``name``, else its ``family`` (the tag
    ``family`` of every member), else ``tune-<id[:8]>``."""
    return str(_g(spec, "name") or "") or str(_g(spec, "family") or "") or f"tune-{tune_id[:8]}"


def checkpoint_name(tune_id: str, member: str, step: int | None) -> str:
    """A member's checkpoint's store name (``<member> step <n> <id[:8]>``, ``… final …``): the
    same in every attempt (a repeated save finds it), unique to the job (a family name used
    again by another job does not collide; the job's checkpoints carry tag ``tune``)."""
    return f"{member} " + ("final" if step is None else f"step {step}") + f" {tune_id[:8]}"


def saves_per_member(spec: Any) -> int:
    """How many checkpoints one member saves: every ``save_every`` steps, and the final one."""
    n = getattr(spec, "checkpoints_per_member", None)
    if isinstance(n, int):
        return n
    steps = int(_g(spec, "steps", 0) or 0)
    every = int(_g(spec, "save_every", 0) or 0)
    return ((steps - 1) // every if every > 0 else 0) + 1


def family_bytes(spec: Any, store: Any, members: list[dict[str, Any]]) -> int:
    """About the bytes the family's checkpoints take: a full fine-tuned member writes the
    base's size per save; a PEFT member writes an adapter (counted as 1/20 of the base: the
    adapters peft makes are a few percent of their model at most)."""
    try:
        size = int(store.get_checkpoint(str(_g(spec, "base"))).get("size_bytes") or 0)
    except Exception:  # the base is checked elsewhere
        return 0
    saves, total = saves_per_member(spec), 0
    for m in members:
        full = str(m["tags"].get("method", "full")) in ("full", "full_ft", "finetune")
        total += saves * (size if full else max(1, size // 20))
    return total


class TuneKind(WorkerJobKind):
    name: ClassVar[str] = "tune"
    label: ClassVar[str] = "tune job"
    executor: ClassVar[str] = "workers.tunejob:execute_tune"
    log_name: ClassVar[str] = "losses"

    # -- keys ----------------------------------------------------------------------------------
    def member_keys(self, tune_id: str, index: int) -> JobKeys:
        return JobKeys(self.name, member_ref(tune_id, index), self.log_name)

    def family_keys(self, r: redis.Redis, tune_id: str) -> list[str]:
        n = int(cast(str, r.hget(self.hash_key(tune_id), "members")) or 0)
        out = [self.hash_key(tune_id)]
        for i in range(n):
            out += self.member_keys(tune_id, i).all()
        return out

    def member_hashes(self, tune_id: str, n: int) -> list[str]:
        return [self.member_keys(tune_id, i).hash for i in range(n)]

    # -- creation ------------------------------------------------------------------------------
    def check(self, spec: Any, limits: JobLimits, store: Any, names: dict[str, str]) -> list[str]:
        caps = Caps()
        caps.cap(
            "steps:", int(_g(spec, "steps", 0) or 0), limits.train_steps, "BASIN_MAX_TRAIN_STEPS"
        )
        over_data_limits(
            caps,
            limits,
            examples=int(_g(spec, "max_examples", 0) or 0),
            length=int(_g(spec, "max_length", 0) or 0),
            batch_size=int(_g(spec, "batch_size", 0) or 0),
        )
        # the held-out evaluation reads examples like a run does: the same cap
        caps.cap(
            "eval_max_examples:",
            int(_g(spec, "eval_max_examples", 0) or 0),
            limits.examples,
            "BASIN_MAX_EXAMPLES",
        )
        out = caps.lines
        members = member_dicts(spec)
        cap = int(getattr(limits, "tune_members", DEFAULT_MAX_MEMBERS) or DEFAULT_MAX_MEMBERS)
        if len(members) > cap:
            out.append(
                f"members: the family has {len(members)} members (the product of its axes), over this "
                f"server's limit of {cap} (BASIN_MAX_TUNE_MEMBERS); vary fewer values"
            )
        name = str(_g(spec, "name") or "")
        if len(name) > limits.name_length:
            out.append(
                f"name: {len(name)} characters is over this server's limit of {limits.name_length} "
                "(BASIN_MAX_NAME_LENGTH)"
            )
        if store is not None and limits.store_bytes is not None:
            need, free = family_bytes(spec, store, members), store.free_bytes(limits.store_bytes)
            if free is not None and need > free:
                out.append(
                    f"the family's checkpoints ({len(members)} members × {saves_per_member(spec)} saves) need "
                    f"about {need:,} bytes but the store has {free:,} left under its quota (BASIN_MAX_STORE_BYTES)"
                )
        return out

    def fields(self, spec: Any, limits: JobLimits) -> dict[str, Any]:
        steps = int(_g(spec, "steps", 0) or 0)
        return {
            "members": len(member_dicts(spec)),
            "total": steps,
            "stride": max(1, math.ceil(steps / MAX_LOSSES)),
            "ended_members": 0,
            "done_members": 0,
        }

    def prepare(self, pipe: Any, job_id: str, spec: Any) -> None:
        pipe.hset(self.hash_key(job_id), "name", family_name(spec, job_id))
        steps = int(_g(spec, "steps", 0) or 0)
        for m in member_dicts(spec):
            pipe.hset(
                self.member_keys(job_id, m["index"]).hash,
                mapping={
                    "spec": json.dumps(m),
                    "status": QUEUED,
                    "attempt": "1",
                    "step": 0,
                    "total": steps,
                },
            )

    def send(self, r: redis.Redis, redis_url: str, queue: str, job_id: str) -> None:
        from service.tasks import JOB_TASK, send_task

        n = int(cast(str, r.hget(self.hash_key(job_id), "members")) or 0)
        for i in range(n):
            send_task(redis_url, queue, JOB_TASK, [self.name, member_ref(job_id, i)])

    # -- reading, cancelling --------------------------------------------------------------------
    def not_found(self, job_id: str) -> JobNotFound:
        return TuneNotFound(split_ref(job_id)[0] if "." in job_id else job_id)

    def state(self, r: redis.Redis, job_id: str) -> MemberState:
        return MemberState(r, job_id)

    def cancel(self, r: redis.Redis, job_id: str, *, store: Any = None) -> str:
        keys = [self.hash_key(job_id)]
        n = int(cast(str, r.hget(keys[0], "members")) or 0)
        keys += self.member_hashes(job_id, n)
        out = r.eval(script("tune_cancel"), len(keys), *keys, repr(time.time()))
        if out == "gone":
            raise self.not_found(job_id)
        if out != "ok":
            raise TuneConflict(f"tune job {job_id} is already {out}")
        return CANCELLED

    def summarise(self, job_id: str, h: dict[str, Any], *, public_url: str = "") -> dict[str, Any]:
        spec = json.loads(h["spec"])
        return {
            "id": job_id,
            "url": f"{public_url}/tunes/{job_id}",
            "name": family_name(spec, job_id),
            "status": h.get("status"),
            "base": spec.get("base"),
            "dataset": spec.get("dataset"),
            "names": json.loads(h.get("names") or "{}"),
            "members": int(h.get("members") or 0),
            "ended_members": int(h.get("ended_members") or 0),
            "done_members": int(h.get("done_members") or 0),
            "steps": int(h.get("total") or 0),
            "created": _f(h.get("created")),
            "finished": _f(h.get("finished")),
            "error": h.get("error") or None,
        }

    # -- the reaper ------------------------------------------------------------------------------
    def settle(self, r: redis.Redis, tune_id: str) -> str:
        """Bring the family's status up to date with its members' (``tune_settle.lua``)."""
        n = int(cast(str, r.hget(self.hash_key(tune_id), "members")) or 0)
        keys = [self.hash_key(tune_id), *self.member_hashes(tune_id, n)]
        return str(r.eval(script("tune_settle"), len(keys), *keys, repr(time.time())))

    def reap(self, r: redis.Redis, ctx: ReapContext) -> ReapReport:
        """Per running member: past its time limit → failed; no live worker announces it and
        its ``beat`` is older than the grace → queued again (a new attempt, its task sent
        again) or, past :data:`MAX_ATTEMPTS`, failed. Then the family's status follows its
        members'; an ended family's keys get the TTL of ended runs."""
        out = ReapReport()
        self.prune(r)
        held = self.holder(ctx.alive)
        idle = any(
            w.get("run") is None and not w.get("fit") and not w.get("job") for w in ctx.alive
        )
        for tune_id in cast("list[str]", r.zrange(self.active_key, 0, -1)):
            status, n_s, limit = cast(
                "list[str | None]",
                r.hmget(self.hash_key(tune_id), ["status", "members", "time_limit_s"]),
            )
            if status is None:
                r.zrem(self.active_key, tune_id)
                out.forgotten.append(tune_id)
                continue
            n = int(n_s or 0)
            for i in range(n):
                mk = self.member_keys(tune_id, i)
                ref = member_ref(tune_id, i)
                mstatus, step, total, worker = cast(
                    "list[str | None]", r.hmget(mk.hash, ["status", "step", "total", "worker"])
                )
                if mstatus != RUNNING:
                    continue
                h = {"step": step, "total": total, "time_limit_s": limit}
                over = r.eval(
                    script("job_overdue"),
                    1,
                    mk.hash,
                    repr(float(ctx.grace_s)),
                    repr(time.time()),
                    self.overdue_message(h),
                )
                if over == "failed" or ref in held:
                    continue
                msg = (
                    f"its worker died {MAX_ATTEMPTS} times (last {worker}, at step {step} of "
                    f"{total}); not tried again — a member that kills its worker would kill the next one too"
                )
                got = r.eval(
                    script("tune_requeue"),
                    2,
                    mk.hash,
                    mk.log,
                    repr(float(ctx.grace_s)),
                    str(MAX_ATTEMPTS),
                    msg,
                    repr(time.time()),
                )
                if got == "requeued":
                    logger.warning(
                        "tune %s member %d: worker %s gave no sign of life for %.0f s; re-queued",
                        tune_id,
                        i,
                        worker,
                        ctx.grace_s,
                    )
                    if ctx.send_job is not None:
                        from service.tasks import JOB_TASK

                        ctx.send_job(JOB_TASK, [self.name, ref])
                elif got == "failed":
                    out.failed.append(ref)
            status = self.settle(r, tune_id)
            if status not in TERMINAL:
                self.rescue_queued(r, tune_id, n, idle, ctx)
            if status in TERMINAL:
                if ctx.finished_ttl_s:
                    pipe = r.pipeline(transaction=True)
                    for key in self.family_keys(r, tune_id):
                        pipe.expire(key, int(ctx.finished_ttl_s))
                    pipe.execute()
                r.zrem(self.active_key, tune_id)
                out.expiring.append(tune_id)
        return out

    def rescue_queued(
        self, r: redis.Redis, tune_id: str, n: int, idle: bool, ctx: ReapContext
    ) -> list[str]:
        """Send again the tasks of queued members while a live worker has stood idle for
        ``ctx.queued_grace_s`` (``BASIN_LOST_TASK_GRACE_SECONDS``): their tasks were lost (a
        worker killed right after taking one, a broker that lost it). A duplicate task is
        harmless: a member starts once, a second delivery is skipped."""
        hk = self.hash_key(tune_id)
        statuses = [r.hget(self.member_keys(tune_id, i).hash, "status") for i in range(n)]
        queued = [member_ref(tune_id, i) for i, st in enumerate(statuses) if st == QUEUED]
        if not queued or not idle or ctx.send_job is None:
            r.hdel(hk, "idle_since")
            return []
        now = time.time()
        since = _f(r.hget(hk, "idle_since"))
        if since is None:
            r.hset(hk, "idle_since", repr(now))
            return []
        if now - since < ctx.queued_grace_s:
            return []
        from service.tasks import JOB_TASK

        for ref in queued:
            ctx.send_job(JOB_TASK, [self.name, ref])
        r.hset(hk, "idle_since", repr(now))
        logger.warning(
            "tune %s: %d queued member(s) while a worker is idle; their tasks sent again",
            tune_id,
            len(queued),
        )
        return queued

    def overdue_message(self, h: dict[str, Any]) -> str:
        return time_limit_message(
            "tune job's member",
            float(h.get("time_limit_s") or 0),
            int(h.get("step") or 0),
            int(h.get("total") or 0),
        )


TUNE = register(TuneKind())


# ---- the API's side ------------------------------------------------------------------------


def create_tune(
    r: redis.Redis,
    spec: Any,
    *,
    names: dict[str, str],
    redis_url: str,
    queue: str,
    limits: JobLimits | None = None,
    store: Any = None,
) -> str:
    """Check the family against ``limits`` (:meth:`TuneKind.check`), store it queued with one
    hash per member and send one task per member; returns its id."""
    return create_job(
        r,
        TUNE,
        spec,
        limits=limits or JobLimits(),
        redis_url=redis_url,
        queue=queue,
        names=names,
        store=store,
    )


def _member_detail(r: redis.Redis, tune_id: str, i: int, now: float) -> dict[str, Any]:
    mk = TUNE.member_keys(tune_id, i)
    h = cast("dict[str, str]", r.hgetall(mk.hash))
    m = json.loads(h.get("spec") or "{}")
    step, total = int(h.get("step") or 0), int(h.get("total") or 0)
    started = _f(h.get("started"))
    rate = (
        step / (now - started)
        if h.get("status") == RUNNING and started and now > started and step
        else None
    )
    return {
        "index": i,
        "ref": member_ref(tune_id, i),
        "name": m.get("name"),
        "tags": m.get("tags") or {},
        "status": h.get("status"),
        "attempt": int(h.get("attempt") or 1),
        "worker": h.get("worker") or None,
        "lost_worker": h.get("lost_worker") or None,
        "step": step,
        "total": total,
        "examples": int(h.get("examples") or 0),
        "steps_per_s": rate,
        "losses": [json.loads(x) for x in r.lrange(mk.log, 0, -1)],
        "checkpoints": json.loads(h.get("checkpoints") or "[]"),
        "final": h.get("final") or None,
        "metrics": json.loads(h.get("metrics") or "{}"),
        "cartography": h.get("cartography") or None,
        "error": h.get("error") or None,
        "started": started,
        "finished": _f(h.get("finished")),
    }


def family_eta(members: list[dict[str, Any]]) -> float | None:
    """Seconds until the family ends at the running members' pace (None until one has a pace):
    the steps left across unfinished members over the running members' steps per second."""
    rates = [m["steps_per_s"] for m in members if m["steps_per_s"]]
    if not rates:
        return None
    left = sum(max(0, m["total"] - m["step"]) for m in members if m["status"] not in TERMINAL)
    return left / sum(rates)


def tune_detail(r: redis.Redis, tune_id: str) -> dict[str, Any]:
    """What ``GET /api/tunes/{id}`` answers; :class:`TuneNotFound` when Redis has no such job."""
    h = job_hash(r, TUNE, tune_id)
    n = int(h.get("members") or 0)
    now = time.time()
    members = [_member_detail(r, tune_id, i, now) for i in range(n)]
    status = h.get("status")
    return {
        **TUNE.summarise(tune_id, h),
        "spec": json.loads(h["spec"]),
        "started": _f(h.get("started")),
        "time_limit_s": _f(h.get("time_limit_s")) or None,
        "loss_stride": int(h.get("stride") or 1),
        "eta_s": family_eta(members) if status in (QUEUED, RUNNING) else None,
        "steps_done": sum(m["total"] if m["status"] == DONE else m["step"] for m in members),
        "steps_total": sum(m["total"] for m in members),
        "member_list": members,
    }


def list_tunes(r: redis.Redis, *, public_url: str = "") -> list[dict[str, Any]]:
    """What ``GET /api/tunes`` answers: every tune job Redis still has, newest first."""
    return list_jobs(r, TUNE, public_url=public_url, fields=LIST_FIELDS)


def cancel_tune(r: redis.Redis, tune_id: str) -> str:
    """Cancel a family: queued members end at once, running ones stop before their next step."""
    return TUNE.cancel(r, tune_id)


# ---- the worker's side ---------------------------------------------------------------------


class MemberState(JobState):
    """The worker's side of one member (``<id>.<i>``): the kernel's :class:`JobState` on the
    member's hash, plus its attempt (only the attempt that holds it may end it), its
    family's cancel flag and time limit, the loss log (one entry per ``stride`` steps)."""

    def __init__(self, r: redis.Redis, ref: str, **kw: Any) -> None:
        super().__init__(r, TUNE, ref, **kw)
        self.tune_id, self.index = split_ref(ref)
        self.family = TUNE.hash_key(self.tune_id)
        self.attempt = "1"
        self.worker = ""
        self._window: list[float] = []
        self._stride = 1

    def start(self, worker: str) -> str:
        out = super().start(worker)
        if out == "ok":
            self.worker = worker
            (attempt,) = cast("list[str | None]", self.r.hmget(self.k.hash, ["attempt"]))
            self.attempt = attempt or "1"
            limit, stride = self.r.hmget(self.family, ["time_limit_s", "stride"])
            self.limit_s, self._stride = float(limit or 0.0), int(stride or 1)
            self.r.hset(self.k.hash, mapping={"time_limit_s": repr(self.limit_s)})
            TUNE.settle(self.r, self.tune_id)
        return out

    def step(self, step: int, loss: float, examples: int, eta_s: float | None) -> None:
        self._window.append(float(loss))
        entry = None
        total = int(self.r.hget(self.k.hash, "total") or 0)
        if step % self._stride == 0 or step >= total:
            entry = {
                "step": step,
                "loss": sum(self._window) / len(self._window),
                "examples": examples,
            }
            self._window = []
        self.progress(
            step, entry, examples=examples, eta_s=repr(eta_s) if eta_s is not None else ""
        )

    def should_stop(self) -> bool:
        if super().should_stop():
            return True
        return self.r.hget(self.family, "cancel") == "1"

    def holds(self) -> bool:
        """Whether this attempt still holds the member (running, this worker, this attempt)."""
        st, worker, attempt = self.r.hmget(self.k.hash, ["status", "worker", "attempt"])
        return st == RUNNING and worker == self.worker and (attempt or "1") == self.attempt

    def end(self, status: str, error: str = "", **fields: Any) -> str:
        """End the member if this attempt holds it (``ok``; else ``stale`` or the status found),
        then settle the family."""
        flat: list[str] = []
        for k, v in fields.items():
            flat += [k, json.dumps(v) if isinstance(v, (dict, list)) else str(v)]
        out = str(
            self.r.eval(
                script("tune_member_end"),
                1,
                self.k.hash,
                status,
                repr(time.time()),
                error,
                self.worker,
                self.attempt,
                *flat,
            )
        )
        TUNE.settle(self.r, self.tune_id)
        return out


__all__ = [
    "DONE",
    "FAILED",
    "MAX_ATTEMPTS",
    "TUNE",
    "JobKind",
    "MemberState",
    "TuneConflict",
    "TuneKind",
    "TuneNotFound",
    "cancel_tune",
    "checkpoint_name",
    "create_tune",
    "family_eta",
    "family_name",
    "list_tunes",
    "member_dicts",
    "member_ref",
    "tune_detail",
]
