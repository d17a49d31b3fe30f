"""The ``study`` job kind: the barrier matrix of N checkpoints (:class:`basin.study.plan.StudySpec`,
references resolved to store ids), docs/study.md.

A study holds no work of its own: its pairs are ordinary **runs** (the ``run`` kind), queued
phase by phase (:func:`basin.study.plan.plan`) and drained by every worker at once through
leases — so a dead worker's points are leased again and nothing is lost, every pair's page
is a run page, and the point cache shares each checkpoint's own point between pairs. The
study advances (:func:`advance`: the next phase's runs, or the result once every run is
done) when a worker ends one of its runs and on every reaper pass (the same function,
under a lock; whichever comes first).

============================ ====== ==================================================
``basin:study:<id>``         hash   the kernel's fields (spec, names, status, created,
                                    started, finished, error, time_limit_s) and
                                    phase, queue, runs (JSON {pair key: run id}),
                                    tags (JSON [per checkpoint]), result (JSON, at the end)
``basin:study:<id>:lock``    string who advances it now (a few seconds)
``basin:studys``             zset   study id → created
``basin:studys:active``      zset   the studies the reaper still visits
============================ ====== ==================================================

Limits (:meth:`StudyKind.check`): the server's caps on every run it will queue (the same as
``POST /api/runs``), at most ``BASIN_MAX_CHECKPOINTS`` checkpoints, the time limit of a job
(``BASIN_JOB_TIME_LIMIT_S``: the reaper cancels its runs and fails it past that). Cancel
cancels every run of the study that has not ended.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any, ClassVar, cast

import redis

from basin.errors import BasinError
from basin.status import CANCELLED, DONE, FAILED, QUEUED, RUNNING, TERMINAL
from basin.study.matrix import build, cell_of, own_metrics
from basin.study.plan import Pair, StudySpec, full_points, plan
from service.jobs.kernel import (
    JobConflict,
    JobKind,
    JobNotFound,
    ReapContext,
    ReapReport,
    _f,
    create_job,
    job_hash,
    list_jobs,
    register,
)
from service.jobs.limits import JobLimits, over_run_limits, scope_over_limit
from service.runstate.keys import RunKeys

logger = logging.getLogger(__name__)

#: How long one advance may hold a study's lock (ms); a dead holder's lock expires.
LOCK_MS = 30_000


class StudyKind(JobKind):
    name: ClassVar[str] = "study"
    label: ClassVar[str] = "study"

    def keys(self, job_id: str) -> list[str]:
        return [self.hash_key(job_id), self.hash_key(job_id) + ":lock"]

    def check(self, spec: Any, limits: JobLimits, store: Any, names: dict[str, str]) -> list[str]:
        out: list[str] = []
        n = len(spec.checkpoints)
        if n > limits.checkpoints:
            out.append(
                f"checkpoints: {n} is over this server's limit of {limits.checkpoints} (BASIN_MAX_CHECKPOINTS)"
            )
        if n >= 2:
            for ds in (None, *spec.datasets.values()):
                run = spec.pair_spec(0, 1, dataset=ds)
                out += [
                    f"its pairs' runs' {x}"
                    for x in over_run_limits(run, limits)
                    if f"its pairs' runs' {x}" not in out
                ]
        scope = scope_over_limit(spec.scope, limits)
        if scope:
            out.append(scope)
        return out

    def fields(self, spec: Any, limits: JobLimits) -> dict[str, Any]:
        return {
            "phase": 0,
            "runs": "{}",
            "total": len(plan(len(spec.checkpoints), list(spec.datasets))),
        }

    def time_limit_s(self, spec: Any, limits: JobLimits) -> float:
        return float(limits.time_limit_s or 0.0)

    def send(self, r: redis.Redis, redis_url: str, queue: str, job_id: str) -> None:
        r.hset(self.hash_key(job_id), "queue", queue)
        advance(r, job_id, redis_url=redis_url, queue=queue)

    def not_found(self, job_id: str) -> JobNotFound:
        return JobNotFound(
            f"no study with id {job_id!r} (an ended study is forgotten "
            "BASIN_FINISHED_RUN_TTL_S after it ends; its pairs' runs stay)"
        )

    def cancel(self, r: redis.Redis, job_id: str, *, store: Any = None) -> str:
        h = job_hash(r, self, job_id)
        if h.get("status") in TERMINAL:
            raise JobConflict(f"study {job_id} is already {h['status']}")
        _end(r, job_id, CANCELLED, "")
        _stop_runs(r, job_id, store)
        return CANCELLED

    def summarise(self, job_id: str, h: dict[str, Any], *, public_url: str = "") -> dict[str, Any]:
        spec = json.loads(h.get("spec") or "{}")
        runs = json.loads(h.get("runs") or "{}")
        return {
            "id": job_id,
            "kind": self.name,
            "url": f"{public_url}/studies/{job_id}",
            "status": h.get("status"),
            "name": spec.get("name"),
            "checkpoints": len(spec.get("checkpoints") or []),
            "runs": len(runs),
            "total": int(h.get("total") or 0),
            "created": _f(h.get("created")),
            "finished": _f(h.get("finished")),
            "error": h.get("error") or None,
        }

    def reap(self, r: redis.Redis, ctx: ReapContext) -> ReapReport:
        """Advance every active study (a worker that ended its run may have died before it did);
        fail one past its time limit (its runs cancelled); give ended ones the TTL of ended runs."""
        out = ReapReport()
        self.prune(r)
        for job_id in cast("list[str]", r.zrange(self.active_key, 0, -1)):
            status, started, limit = cast(
                "list[str | None]",
                r.hmget(self.hash_key(job_id), ["status", "started", "time_limit_s"]),
            )
            if status is None:
                r.zrem(self.active_key, job_id)
                out.forgotten.append(job_id)
                continue
            if (
                status == RUNNING
                and limit
                and started
                and time.time() - float(started) > float(limit) + ctx.grace_s
            ):
                if _end(
                    r,
                    job_id,
                    FAILED,
                    f"the study ran past this server's time limit of {float(limit):.0f} s "
                    "(BASIN_JOB_TIME_LIMIT_S); its unfinished runs were cancelled",
                ):
                    _stop_runs(r, job_id, ctx.store)
                    out.failed.append(job_id)
                status = FAILED
            if status not in TERMINAL:
                try:
                    status = advance(r, job_id)
                except redis.RedisError:
                    raise
                except Exception:
                    logger.exception("advancing study %s failed", job_id)
            if status in TERMINAL:
                if ctx.finished_ttl_s:
                    for key in self.keys(job_id):
                        r.expire(key, int(ctx.finished_ttl_s))
                r.zrem(self.active_key, job_id)
                out.expiring.append(job_id)
        return out


STUDY = register(StudyKind())


def _end(r: redis.Redis, job_id: str, status: str, error: str) -> bool:
    """End the study unless it already ended; True when this call ended it."""
    hk = STUDY.hash_key(job_id)
    with r.pipeline() as pipe:
        try:
            pipe.watch(hk)
            if pipe.hget(hk, "status") in TERMINAL or not pipe.exists(hk):
                pipe.unwatch()
                return False
            pipe.multi()
            pipe.hset(hk, mapping={"status": status, "finished": repr(time.time()), "error": error})
            pipe.execute()
            return True
        except redis.WatchError:
            return False


def _stop_runs(r: redis.Redis, job_id: str, store: Any = None) -> None:
    from service.jobs.run import RUN

    for run_id in json.loads(r.hget(STUDY.hash_key(job_id), "runs") or "{}").values():
        try:
            RUN.cancel(r, run_id, store=store)
        except (JobConflict, JobNotFound):
            pass


def _pairs_of(h: dict[str, str]) -> tuple[StudySpec, list[Pair]]:
    spec = StudySpec.model_validate(json.loads(h["spec"]))
    return spec, plan(len(spec.checkpoints), list(spec.datasets))


def advance(
    r: redis.Redis,
    job_id: str,
    *,
    redis_url: str | None = None,
    queue: str | None = None,
    store: Any = None,
) -> str:
    """Move the study on, under its lock (a no-op when another process holds it): queue the
    runs of the next phase once every run of the current one is done, or build the result
    once every run is; fail the study when a run of it failed or was cancelled. Returns
    the study's status."""
    hk = STUDY.hash_key(job_id)
    token = secrets.token_hex(8)
    if not r.set(hk + ":lock", token, nx=True, px=LOCK_MS):
        return str(r.hget(hk, "status") or "gone")
    try:
        h = cast("dict[str, str]", r.hgetall(hk))
        if not h or h.get("status") in TERMINAL:
            return h.get("status", "gone") if h else "gone"
        spec, pairs = _pairs_of(h)
        runs: dict[str, str] = json.loads(h.get("runs") or "{}")
        status = {key: r.hget(RunKeys(rid).run, "status") for key, rid in runs.items()}
        bad = [(k, s) for k, s in status.items() if s in (FAILED, CANCELLED) or s is None]
        if bad:
            key, s = bad[0]
            err = str(r.hget(RunKeys(runs[key]).run, "error") or "")
            what = "expired" if s is None else s
            _end(
                r,
                job_id,
                FAILED,
                f"its run {runs[key]} ({key}) {what}" + (f": {err}" if err else ""),
            )
            _stop_runs(r, job_id, store)
            return FAILED
        phase = int(h.get("phase") or 0)
        if any(status.get(p.key) != DONE for p in pairs if p.phase <= phase):
            return str(h.get("status"))
        later = sorted({p.phase for p in pairs if p.phase > phase})
        if later:
            if redis_url is None or queue is None:
                from service.settings import get_settings

                settings = get_settings()
                redis_url = redis_url or settings.redis_url
                queue = queue or h.get("queue") or settings.task_queue
            nxt = later[0]
            names = json.loads(h.get("names") or "{}")
            tags = json.loads(h.get("tags") or "[]")
            for p in pairs:
                if p.phase == nxt and p.key not in runs:
                    runs[p.key] = _queue_pair(r, job_id, spec, p, names, tags, redis_url, queue)
                    r.hset(
                        hk, "runs", json.dumps(runs)
                    )  # one by one: a crash leaves no run unknown
            fields: dict[Any, Any] = {"phase": nxt, "runs": json.dumps(runs)}
            if h.get("status") == QUEUED:
                fields.update(status=RUNNING, started=repr(time.time()))
            r.hset(hk, mapping=fields)
            return RUNNING
        result = study_result(r, job_id, h=h)
        with r.pipeline(transaction=True) as pipe:
            pipe.hset(
                hk,
                mapping={
                    "result": json.dumps(result),
                    "status": DONE,
                    "finished": repr(time.time()),
                },
            )
            pipe.execute()
        return DONE
    finally:
        if r.get(hk + ":lock") == token:
            r.delete(hk + ":lock")


def _queue_pair(
    r: redis.Redis,
    job_id: str,
    spec: StudySpec,
    p: Pair,
    names: dict[str, str],
    tags: list[dict[str, Any]],
    redis_url: str,
    queue: str,
) -> str:
    from service.jobs.run import RUN

    data = spec.pair_data(
        p.a, p.b, dataset=None if p.dataset == "main" else spec.datasets[p.dataset]
    )
    from basin.spec import parse_spec

    run_spec = parse_spec(data)
    ids = (spec.checkpoints[p.a].ref, spec.checkpoints[p.b].ref)
    run_tags = {
        ident: tags[i]
        for ident, i in zip(ids, (p.a, p.b), strict=True)
        if i < len(tags) and tags[i]
    }
    from service.settings import get_settings

    # a pair's run is shared by its own link: it names what it evaluates, not every
    # checkpoint of the study (the study's own link shows those)
    text = json.dumps(run_spec.model_dump(mode="json"))
    own = {ident: name for ident, name in names.items() if ident in text}
    return create_job(
        r,
        RUN,
        run_spec,
        limits=JobLimits.from_settings(get_settings()),
        redis_url=redis_url,
        queue=queue,
        names=own,
        fields={"tags": json.dumps(run_tags), "study": job_id},
    )


def study_result(r: redis.Redis, job_id: str, *, h: dict[str, str] | None = None) -> dict[str, Any]:
    """The study's result from its runs so far (:func:`basin.study.matrix.build`): complete once
    every run is done, partial while they run (a pair shows once its run is done)."""
    from service.documents import build_document

    h = h or job_hash(r, STUDY, job_id)
    spec, pairs = _pairs_of(h)
    runs: dict[str, str] = json.loads(h.get("runs") or "{}")
    names_by_id = json.loads(h.get("names") or "{}")
    tags = json.loads(h.get("tags") or "[]") or [c.tags for c in spec.checkpoints]
    labels = [c.name or names_by_id.get(c.ref, c.ref[:12]) for c in spec.checkpoints]
    cells: dict[tuple[int, int], dict[str, Any]] = {}
    run_of: dict[tuple[int, int], str] = {}
    points: dict[tuple[int, int], int] = {}
    own: dict[str, dict[int, dict[str, float]]] = {"main": {}, **{k: {} for k in spec.datasets}}
    progress: dict[str, Any] = {}
    metrics: list[str] = []
    evaluated = cached = 0
    for p in pairs:
        rid = runs.get(p.key)
        if rid is None:
            continue
        doc = build_document(r, rid)
        if doc is None:
            continue
        rh = cast("list[str | None]", r.hmget(RunKeys(rid).run, ["evaluations", "cached"]))
        evaluated += int(rh[0] or 0)
        cached += int(rh[1] or 0)
        own[p.dataset].update(own_metrics(doc["points"], p.a, p.b))
        key = (min(p.a, p.b), max(p.a, p.b))
        if p.dataset == "main":
            run_of[key] = rid
            points[key] = len(doc["points"])
            progress[f"{key[0]}:{key[1]}"] = {
                "run": rid,
                "status": doc["status"],
                "points": len(doc["points"]),
            }
            if doc["status"] == DONE and doc.get("summary"):
                metrics = metrics or list(doc["summary"].get("barrier") or {})
                cells[key] = cell_of(doc["summary"], metrics)
    out = build(
        labels,
        tags,
        metrics,
        cells,
        own,
        cluster_metric=spec.cluster_metric,
        runs=run_of,
        points=points,
    )
    out["progress"] = progress
    out["evaluations"] = {
        "performed": evaluated,
        "reused": cached,
        "full_runs": full_points(spec),
        "fraction": evaluated / full_points(spec) if full_points(spec) else None,
    }
    return out


def after_run(
    r: redis.Redis, run_id: str, *, redis_url: str, queue: str, store: Any = None
) -> None:
    """A worker ended its part of run ``run_id``: when the run belongs to a study and has ended,
    advance the study now (not at the next reaper pass)."""
    study, status = r.hmget(RunKeys(run_id).run, ["study", "status"])
    if study and status in TERMINAL:
        try:
            advance(r, str(study), redis_url=redis_url, queue=queue, store=store)
        except BasinError as e:
            logger.warning("study %s: %s", study, e)


# ---- the API's side ------------------------------------------------------------------------


def create_study(
    r: redis.Redis,
    spec: StudySpec,
    *,
    names: dict[str, str],
    tags: list[dict[str, Any]],
    redis_url: str,
    queue: str,
    limits: JobLimits | None = None,
    store: Any = None,
) -> str:
    """Check the study against ``limits`` (every run it will queue), store it and queue its
    first phase; returns its id (a capability, like a run's)."""
    return create_job(
        r,
        STUDY,
        spec,
        limits=limits or JobLimits(),
        redis_url=redis_url,
        queue=queue,
        names=names,
        store=store,
        fields={"tags": json.dumps(tags)},
    )


def study_detail(r: redis.Redis, job_id: str) -> dict[str, Any]:
    """What ``GET /api/studies/{id}`` answers: status, spec, names, its runs and the result
    (the stored one once done; else built from the runs done so far)."""
    h = job_hash(r, STUDY, job_id)
    result = json.loads(h["result"]) if h.get("result") else study_result(r, job_id, h=h)
    return {
        "id": job_id,
        "status": h.get("status"),
        "error": h.get("error") or None,
        "phase": int(h.get("phase") or 0),
        "spec": json.loads(h["spec"]),
        "names": json.loads(h.get("names") or "{}"),
        "runs": json.loads(h.get("runs") or "{}"),
        "total": int(h.get("total") or 0),
        "created": _f(h.get("created")),
        "started": _f(h.get("started")),
        "finished": _f(h.get("finished")),
        "time_limit_s": _f(h.get("time_limit_s")) or None,
        "result": result,
    }


def list_studies(r: redis.Redis, *, public_url: str = "") -> list[dict[str, Any]]:
    fields = ("spec", "status", "runs", "total", "created", "finished", "error")  # not the result
    return list_jobs(r, STUDY, public_url=public_url, fields=fields)


__all__ = [
    "STUDY",
    "StudyKind",
    "advance",
    "after_run",
    "create_study",
    "list_studies",
    "study_detail",
    "study_result",
]
