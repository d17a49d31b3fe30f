"""Routes: health — Redis reachable, the workers alive (from their heartbeats) and their devices."""

from __future__ import annotations

from typing import Any

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse

from backend.app.api.deps import RedisDep, SettingsDep
from workers.sinks import alive_workers

router = APIRouter(tags=["health"])


@router.get("/health")
def health(settings: SettingsDep, r: RedisDep) -> Any:
    """Redis reachable, workers alive with their devices and current run, queue length."""
    try:
        info = r.info("server")
        workers = alive_workers(r)
        queued = r.llen(settings.task_queue)
    except redis.RedisError as e:
        body = {"ok": False, "redis": {"ok": False, "error": str(e)}, "workers": []}
        return JSONResponse(status_code=503, content=body)
    return {
        "ok": bool(workers),
        "redis": {"ok": True, "version": info.get("redis_version")},
        "workers": [
            {
                "name": w.get("name"),
                "device": w.get("device"),
                "host": w.get("host"),
                "pid": w.get("pid"),
                "run": w.get("run"),
                "beat": w.get("beat"),
            }
            for w in workers
        ],
        "queue": {"name": settings.task_queue, "pending_tasks": queued},
    }
