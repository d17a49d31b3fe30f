"""Routes: health — Redis reachable, the workers alive (from their heartbeats) and their devices.

``status`` is ``ok`` (Redis and at least one worker), ``degraded`` (HTTP 200: the API
answers and runs are accepted, but no worker is alive, so none progresses) or ``down``
(HTTP 503: Redis is unreachable).

``supervisor.events``: what ``basin up``'s supervisor did lately (newest first), e.g.
``{"service": "worker", "reason": "exited with code -9 (killed — out of memory?)",
"message": "... and was restarted at 16:40:12 UTC", "restarted_at": <unix s>}``; the
dashboard shows recent ones in a banner.

``demo_lm``: the background build of ``basin up``'s LM demo (``null`` when there is none):
``{"state": "building" | "registering" | "done" | "failed", "fraction": 0..1, "stage": text,
"error", "warning", "run_id", "run_url", "updated"}``; the dashboard shows it in a banner.
``state`` may also be ``waiting`` (the LM pair waits for the MiniLM demo); ``eta_s`` is the
seconds left at the rate so far and ``what`` says what is built.
``demo``: the same document for the first start's MiniLM demo (``null`` when there is none),
written from the first second of ``basin up`` so the dashboard says what is being built.
Health is open, and a run id opens its run: with ``BASIN_API_TOKEN`` set, ``run_id`` and
``run_url`` are left out unless the request carries the token (``docs/service.md``, "What a
link reveals").
"""

from __future__ import annotations

from typing import Any, cast

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from backend.app.api.deps import MayList, RedisDep, SettingsDep
from service.runstate import alive_workers, json_or
from service.runstate.keys import DEMO_LM_STATUS_KEY, DEMO_STATUS_KEY, SUPERVISOR_EVENTS_KEY

router = APIRouter(tags=["health"])

NO_WORKER_HEALTH = "no worker is alive: runs are accepted but wait until a worker joins"


def _safe_url(settings) -> str:
    """The Redis URL without a password (for messages)."""
    url = settings.redis_url
    if "@" in url:
        scheme, rest = url.split("://", 1) if "://" in url else ("redis", url)
        url = f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@router.get("/health")
def health(settings: SettingsDep, r: RedisDep, may_list: MayList) -> Any:
    """Redis reachable, workers alive with their devices and whether they are busy (not
    which run: health needs no token, and a run id is the capability to read it), queue length;
    ``status`` ok / degraded (no worker: 200 with a ``warning``) / down (no Redis: 503)."""
    try:
        info = r.info("server")
        workers = alive_workers(r)
        queued = r.llen(settings.task_queue)
        raw_events = cast("list[str]", r.lrange(SUPERVISOR_EVENTS_KEY, 0, 9))  # decode_responses
        raw_demo = r.get(DEMO_LM_STATUS_KEY)
        raw_minilm = r.get(DEMO_STATUS_KEY)
    except redis.RedisError as e:
        body = {
            "ok": False,
            "status": "down",
            "warning": f"Redis is unreachable ({_safe_url(settings)}): {e}",
            "redis": {"ok": False, "error": str(e)},
            "workers": [],
        }
        return JSONResponse(status_code=503, content=body)
    return {
        "ok": bool(workers),
        "status": "ok" if workers else "degraded",
        "warning": None if workers else NO_WORKER_HEALTH,
        "redis": {"ok": True, "version": info.get("redis_version")},
        "workers": [
            {
                "name": w.get("name"),
                "device": w.get("device"),
                "host": w.get("host"),
                "pid": w.get("pid"),
                # busy or idle, never the run's id: health is open, and an id opens its run
                "busy": bool(w.get("run")),
                "beat": w.get("beat"),
            }
            for w in workers
        ],
        "queue": {"name": settings.task_queue, "pending_tasks": queued},
        "supervisor": {
            "events": [e for e in (json_or(x) for x in raw_events) if isinstance(e, dict)]
        },
        "demo_lm": _demo_lm(raw_demo, with_ids=may_list),
        "demo": _demo_lm(raw_minilm, with_ids=may_list),
    }


#: Fields of the LM demo's status that name a run (its id is the capability to open it).
DEMO_LM_ID_FIELDS = ("run_id", "run_url")


def _demo_lm(raw: Any, *, with_ids: bool = True) -> dict[str, Any] | None:
    """The LM demo's status document, or None (no build, or an unreadable value); without
    ``with_ids``, the fields that name its run are left out."""
    doc = json_or(raw) if raw is not None else None
    if not isinstance(doc, dict):
        return None
    if with_ids:
        return doc
    rid = str(doc.get("run_id") or "")
    return {k: v for k, v in doc.items()
            if k not in DEMO_LM_ID_FIELDS and not (rid and isinstance(v, str) and rid in v)}
