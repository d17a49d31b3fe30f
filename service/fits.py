"""Curve fits as service jobs: their Redis state, shared by the API and the fit worker.

A fit (:class:`basin.fit.FitSpec` with references resolved to store ids) is queued by
``POST /api/fits`` and run by one worker (the Celery task :data:`service.tasks.FIT_TASK`,
same queue as the drains). Its state:

============================ ====== ==================================================
``basin:fit:<id>``           hash   spec (JSON), names (JSON: store id → name), status
                                    (queued/running/done/failed/cancelled), step, total,
                                    eta_s, created, started, finished, error, cancel
                                    ("1" once asked), control (store id of the fitted
                                    control checkpoint), runs (JSON {line, curve}: the ids
                                    of the two evaluation runs queued when it ended),
                                    final_loss, worker, beat (Redis server time of the
                                    worker's last sign of life: start, each step, each
                                    heartbeat)
``basin:fit:<id>:losses``    list   one JSON {step, loss} per training step, in order
``basin:fits``               zset   fit id → created (every fit whose hash has not expired)
``basin:fits:active``        zset   fit id → created: fits the reaper still visits (not
                                    ended, or ended and their keys not yet given a TTL)
============================ ====== ==================================================

Cancel sets ``cancel``; a queued fit ends ``cancelled`` at once, a running one when its
worker checks the flag before its next step.

A dead worker (:func:`reap_fits`, run by the API's reaper on every pass): the worker's
heartbeat (:class:`workers.leases.Heartbeat`) announces the fit it runs and refreshes
the fit's ``beat`` every couple of seconds. A ``running`` fit that no live worker
announces and whose ``beat`` is older than the grace period ends ``failed`` with an error
saying its worker died, at which step. It is not re-queued: a fit's state (control point,
optimiser) lives only in its worker's memory, so a second attempt would start again
from step 0 — and a fit that killed its worker (out of memory) would kill the next one
too. The user starts it again (same spec) when they choose to. A late redelivery of
the dead worker's task finds the fit ended and does nothing.

Expiry: once a fit has ended, the reaper gives its keys the TTL of ended runs
(``BASIN_FINISHED_RUN_TTL``, :attr:`service.settings.Settings.finished_run_ttl_s`) and
drops expired ids from ``basin:fits``. The control checkpoint and the two evaluation runs
stay (they live in the store).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, cast

import redis

from basin import strict_json
from basin.fit import FitSpec
from service.runstate.keys import PREFIX, prune_index
from service.store import Conflict, NotFound

logger = logging.getLogger(__name__)

FITS_KEY = PREFIX + "fits"
#: Fits the reaper still visits (zset id → created).
ACTIVE_FITS_KEY = PREFIX + "fits:active"
FIT_TERMINAL = ("done", "failed", "cancelled")


@dataclass(frozen=True)
class FitKeys:
    id: str

    @property
    def fit(self) -> str:
        return f"{PREFIX}fit:{self.id}"

    @property
    def losses(self) -> str:
        return f"{self.fit}:losses"

    def all(self) -> list[str]:
        return [self.fit, self.losses]


class FitNotFound(NotFound):
    """No fit with that id (404)."""

    def __init__(self, fit_id: str) -> None:
        super().__init__(f"no fit with id {fit_id!r} (an ended fit is forgotten BASIN_FINISHED_RUN_TTL_S after it ends, "
                         "like an ended run's live state; its control checkpoint and evaluation runs stay)")


class FitConflict(Conflict):
    """Cancel of a fit that has ended (409)."""


def create_fit(r: redis.Redis, spec: FitSpec, *, names: dict[str, str], redis_url: str,
               queue: str) -> str:
    """Store a queued fit and send its task; returns its id (a capability, like a run's)."""
    from service.tasks import send_fit

    fit_id = secrets.token_urlsafe(16)
    created = time.time()
    pipe = r.pipeline(transaction=True)
    pipe.hset(FitKeys(fit_id).fit, mapping={
        "spec": json.dumps(spec.model_dump(mode="json")),
        "names": json.dumps(names),
        "status": "queued",
        "step": 0,
        "total": spec.steps,
        "created": repr(created),
    })
    pipe.zadd(FITS_KEY, {fit_id: created})
    pipe.zadd(ACTIVE_FITS_KEY, {fit_id: created})
    pipe.execute()
    send_fit(redis_url, queue, fit_id)
    return fit_id


def _f(v: Any) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except ValueError:
        return None


def fit_detail(r: redis.Redis, fit_id: str) -> dict[str, Any]:
    """What ``GET /api/fits/{id}`` answers; :class:`FitNotFound` when Redis has no such fit."""
    k = FitKeys(fit_id)
    h = r.hgetall(k.fit)
    if not h:
        raise FitNotFound(fit_id)
    losses = [json.loads(x) for x in r.lrange(k.losses, 0, -1)]
    runs = json.loads(h.get("runs") or "{}")
    return {
        "id": fit_id,
        "status": h.get("status"),
        "step": int(h.get("step") or 0),
        "total": int(h.get("total") or 0),
        "eta_s": _f(h.get("eta_s")) if h.get("status") == "running" else None,
        "losses": losses,
        "error": h.get("error") or None,
        "control": h.get("control") or None,
        "runs": runs,
        "final_loss": _f(h.get("final_loss")),
        "spec": json.loads(h["spec"]),
        "names": json.loads(h.get("names") or "{}"),
        "created": _f(h.get("created")),
        "started": _f(h.get("started")),
        "finished": _f(h.get("finished")),
    }


def list_fits(r: redis.Redis, *, public_url: str = "") -> list[dict[str, Any]]:
    """What ``GET /api/fits`` answers: every fit Redis still has, newest first — id, url,
    status, the endpoints' names, curve type, step / total, created, finished, final
    training loss, error, the control checkpoint's id and the evaluation runs' ids."""
    ids = cast("list[str]", r.zrevrange(FITS_KEY, 0, -1))
    pipe = r.pipeline()
    fields = ["spec", "names", "status", "step", "total", "created", "finished", "final_loss",
              "error", "control", "runs"]
    for fit_id in ids:
        pipe.hmget(FitKeys(fit_id).fit, fields)
    out: list[dict[str, Any]] = []
    for fit_id, vals in zip(ids, pipe.execute(), strict=True):
        h = dict(zip(fields, vals, strict=True))
        if h["spec"] is None:  # expired between the two reads
            continue
        spec, names = json.loads(h["spec"]), json.loads(h["names"] or "{}")
        out.append({
            "id": fit_id,
            "url": f"{public_url}/fits/{fit_id}",
            "status": h["status"],
            "a": spec.get("a"),
            "b": spec.get("b"),
            "a_name": names.get(spec.get("a"), spec.get("a")),
            "b_name": names.get(spec.get("b"), spec.get("b")),
            "curve": spec.get("curve"),
            "bends": spec.get("bends"),
            "step": int(h["step"] or 0),
            "total": int(h["total"] or 0),
            "created": _f(h["created"]),
            "finished": _f(h["finished"]),
            "final_loss": _f(h["final_loss"]),
            "error": h["error"] or None,
            "control": h["control"] or None,
            "runs": json.loads(h["runs"] or "{}"),
        })
    return out


#: Cancel atomically: a queued fit ends at once; a running one is flagged for its worker.
_CANCEL = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'gone' end
if s == 'done' or s == 'failed' or s == 'cancelled' then return s end
redis.call('HSET', KEYS[1], 'cancel', '1')
if s == 'queued' then
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished', ARGV[1])
end
return 'ok'
"""


def cancel_fit(r: redis.Redis, fit_id: str) -> str:
    """Ask a fit to stop; :class:`FitConflict` when it has already ended."""
    out = r.eval(_CANCEL, 1, FitKeys(fit_id).fit, repr(time.time()))
    if out == "gone":
        raise FitNotFound(fit_id)
    if out != "ok":
        raise FitConflict(f"fit {fit_id} is already {out}")
    return "cancelled"


#: Start: queued → running, unless it was cancelled (or another worker took it).
_START = """
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= 'queued' then return s or 'gone' end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'status', 'running', 'started', ARGV[1], 'worker', ARGV[2],
           'beat', tonumber(t[1]) + tonumber(t[2]) / 1000000)
return 'ok'
"""

#: A sign of life of a running fit's worker: ``beat`` = Redis server time (the reaper
#: compares it with the same clock). Never recreates an expired or deleted fit.
_BEAT = """
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= 'running' then return s or 'gone' end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'beat', tonumber(t[1]) + tonumber(t[2]) / 1000000)
return 'ok'
"""

#: Fail a running fit whose worker has given no sign of life for ARGV[1] seconds (server
#: time). ARGV: grace, finished (client time, like every ``finished``), error.
_FAIL_DEAD = """
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= 'running' then return s or 'gone' end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local beat = tonumber(redis.call('HGET', KEYS[1], 'beat') or '0') or 0
if now - beat < tonumber(ARGV[1]) then return 'alive' end
redis.call('HSET', KEYS[1], 'status', 'failed', 'finished', ARGV[2], 'error', ARGV[3])
return 'failed'
"""

#: End, unless already ended (a queued cancel).
_END = """
local s = redis.call('HGET', KEYS[1], 'status')
if not s or s == 'done' or s == 'failed' or s == 'cancelled' then return s or 'gone' end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished', ARGV[2], 'error', ARGV[3])
return 'ok'
"""


class FitState:
    """The worker's side of one fit: start, record steps, read the cancel flag, end."""

    def __init__(self, r: redis.Redis, fit_id: str) -> None:
        self.r, self.id, self.k = r, fit_id, FitKeys(fit_id)

    def start(self, worker: str) -> str:
        return str(self.r.eval(_START, 1, self.k.fit, repr(time.time()), worker))

    def step(self, step: int, loss: float, eta_s: float | None) -> None:
        pipe = self.r.pipeline(transaction=True)
        pipe.rpush(self.k.losses, strict_json.dumps({"step": step, "loss": loss}))  # nan → null
        pipe.hset(self.k.fit, mapping={"step": step, "eta_s": repr(eta_s) if eta_s is not None else ""})
        pipe.eval(_BEAT, 1, self.k.fit)
        pipe.execute()

    def cancelled(self) -> bool:
        """Whether the fit should stop: cancel asked, or it is no longer ``running`` (the
        reaper failed it while this worker was cut off from Redis, or it expired)."""
        cancel, status = self.r.hmget(self.k.fit, ["cancel", "status"])
        return cancel == "1" or status != "running"

    def running(self) -> bool:
        return self.r.hget(self.k.fit, "status") == "running"

    def set(self, **fields: Any) -> None:
        self.r.hset(self.k.fit, mapping={k: json.dumps(v) if isinstance(v, dict) else v
                                         for k, v in fields.items()})

    def end(self, status: str, error: str = "") -> str:
        return str(self.r.eval(_END, 1, self.k.fit, status, repr(time.time()), error))


def beat_fit(r: redis.Redis, fit_id: str) -> str:
    """Record a sign of life of ``fit_id``'s worker (its heartbeat calls this)."""
    return str(r.eval(_BEAT, 1, FitKeys(fit_id).fit))


def dead_worker_message(worker: str | None, step: int, total: int, grace_s: float) -> str:
    """The error a fit whose worker died ends with."""
    who = f"its worker ({worker})" if worker else "its worker"
    return (f"{who} died or was cut off: no sign of life for {grace_s:.0f} s, at step {step} of "
            f"{total}. The fit was not resumed (its control point and optimiser lived in that "
            "worker's memory); start it again with the same spec")


@dataclass
class FitReapReport:
    """What one pass over the fits did (fit ids)."""

    failed: list[str] = field(default_factory=list)  # a running fit whose worker died
    expiring: list[str] = field(default_factory=list)  # ended: keys given their TTL
    forgotten: list[str] = field(default_factory=list)  # gone from Redis (expired, deleted)


def prune_expired_fits(r: redis.Redis, batch: int = 200) -> int:
    """Drop from ``basin:fits`` the oldest ids whose fit hash expired (or was deleted)."""
    return prune_index(r, FITS_KEY, lambda fit_id: FitKeys(fit_id).fit, batch)


def seed_active_fits(r: redis.Redis) -> int:
    """Add to ``basin:fits:active`` the fits created before it existed whose keys have no TTL."""
    ids = cast("list[tuple[str, float]]", r.zrange(FITS_KEY, 0, -1, withscores=True))
    pipe = r.pipeline()
    for fit_id, _ in ids:
        pipe.ttl(FitKeys(fit_id).fit)
    added = 0
    for (fit_id, created), ttl in zip(ids, pipe.execute(), strict=True):
        if ttl == -1:  # exists, no TTL yet
            added += cast(int, r.zadd(ACTIVE_FITS_KEY, {fit_id: created}, nx=True))
    return added


def reap_fits(r: redis.Redis, *, alive: list[dict] | None = None, grace_s: float,
              finished_ttl_s: int | None = None) -> FitReapReport:
    """One pass over the active fits: fail the running ones whose worker died (none of the
    ``alive`` workers' heartbeats names the fit and its ``beat`` is older than ``grace_s``),
    give ended ones' keys the TTL ``finished_ttl_s`` (None or 0: never expire), forget
    the gone ones. ``alive``: the live workers' heartbeats (read here when None)."""
    from service.runstate.reads import alive_workers

    out = FitReapReport()
    prune_expired_fits(r)
    ids = cast("list[str]", r.zrange(ACTIVE_FITS_KEY, 0, -1))
    if not ids:
        return out
    fitting = {w.get("fit") for w in (alive_workers(r) if alive is None else alive)}
    for fit_id in ids:
        k = FitKeys(fit_id)
        status, step, total, worker = cast("list[str | None]",
                                           r.hmget(k.fit, ["status", "step", "total", "worker"]))
        if status is None:
            r.zrem(ACTIVE_FITS_KEY, fit_id)
            out.forgotten.append(fit_id)
            continue
        if status == "running" and fit_id not in fitting:
            msg = dead_worker_message(worker, int(step or 0), int(total or 0), grace_s)
            if r.eval(_FAIL_DEAD, 1, k.fit, repr(float(grace_s)), repr(time.time()), msg) == "failed":
                logger.warning("fit %s: worker %s gave no sign of life for %.0f s; failed it",
                               fit_id, worker, grace_s)
                out.failed.append(fit_id)
                status = "failed"
        if status in FIT_TERMINAL:
            if finished_ttl_s:
                pipe = r.pipeline(transaction=True)
                for key in k.all():
                    pipe.expire(key, int(finished_ttl_s))
                pipe.execute()
            r.zrem(ACTIVE_FITS_KEY, fit_id)
            out.expiring.append(fit_id)
    return out


__all__ = ["ACTIVE_FITS_KEY", "FITS_KEY", "FIT_TERMINAL", "FitConflict", "FitKeys", "FitNotFound",
           "FitReapReport", "FitState", "beat_fit", "cancel_fit", "create_fit", "dead_worker_message",
           "fit_detail", "list_fits", "prune_expired_fits", "reap_fits", "seed_active_fits"]
