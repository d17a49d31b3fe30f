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
                                    final_loss, worker
``basin:fit:<id>:losses``    list   one JSON {step, loss} per training step, in order
``basin:fits``               zset   fit id → created
============================ ====== ==================================================

Cancel sets ``cancel``; a queued fit ends ``cancelled`` at once, a running one when its
worker checks the flag before its next step.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis

from basin.fit import FitSpec
from service.runstate.keys import PREFIX
from service.store import Conflict, NotFound

FITS_KEY = PREFIX + "fits"
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


class FitNotFound(NotFound):
    """No fit with that id (404)."""

    def __init__(self, fit_id: str) -> None:
        super().__init__(f"no fit with id {fit_id!r}")


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
redis.call('HSET', KEYS[1], 'status', 'running', 'started', ARGV[1], 'worker', ARGV[2])
return 'ok'
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
        pipe.rpush(self.k.losses, json.dumps({"step": step, "loss": loss}))
        pipe.hset(self.k.fit, mapping={"step": step, "eta_s": repr(eta_s) if eta_s is not None else ""})
        pipe.execute()

    def cancelled(self) -> bool:
        return self.r.hget(self.k.fit, "cancel") == "1"

    def set(self, **fields: Any) -> None:
        self.r.hset(self.k.fit, mapping={k: json.dumps(v) if isinstance(v, dict) else v
                                         for k, v in fields.items()})

    def end(self, status: str, error: str = "") -> str:
        return str(self.r.eval(_END, 1, self.k.fit, status, repr(time.time()), error))


__all__ = ["FITS_KEY", "FIT_TERMINAL", "FitConflict", "FitKeys", "FitNotFound", "FitState",
           "cancel_fit", "create_fit", "fit_detail"]
