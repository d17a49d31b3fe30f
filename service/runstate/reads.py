"""Reading a run's state from Redis: its points, timings (the live workers: :mod:`.presence`)."""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

from service.runstate.keys import RunKeys
from service.runstate.presence import alive_workers, heartbeat_ttl
from service.runstate.queue import _s


def read_points(
    client: redis.Redis, run_id: str, after: str = "-", count: int | None = None
) -> tuple[list[dict], str | None]:
    """Points in the run's stream strictly after stream id ``after``; returns (points, last id)."""
    start = "-" if after in ("", "-", "0", "0-0") else "(" + after
    # redis-py types each entry's id and fields Optional; XRANGE gives [(id, {field: value})]
    entries = cast(
        "list[tuple[str | bytes, dict[str | bytes, str | bytes]]]",
        client.xrange(RunKeys(run_id).points, min=start, max="+", count=count),
    )
    pts = [json.loads(_s(fields.get("point") or fields.get(b"point"))) for _, fields in entries]
    last = _s(entries[-1][0]) if entries else None
    return pts, last


def now() -> float:
    return time.time()


def run_timings(h: dict[str, str], finished: float, n_points: int) -> dict[str, Any]:
    """The result document's ``timings`` from a run hash: seconds and counts.

    ``total_s`` = finished − started (or created); ``points_per_s`` = n_points / total_s.
    """
    started = float(h.get("started") or h.get("created") or finished)
    total_s = max(finished - started, 1e-9)
    return {
        "load_s": round(float(h.get("load_s") or 0.0), 4),
        "eval_s": round(float(h.get("eval_s") or 0.0), 4),
        "total_s": round(total_s, 4),
        "points_per_s": round(n_points / total_s, 4),
        "device": h.get("device") or "cpu",
        "evaluations": int(h.get("evaluations") or 0),
        "cached_points": int(h.get("cached") or 0),
    }


def json_or(v: str | None, default: Any = None) -> Any:
    """``json.loads(v)``, or ``default`` for a missing or malformed value."""
    if not v:
        return default
    try:
        return json.loads(v)
    except json.JSONDecodeError:
        return default


__all__ = ["alive_workers", "heartbeat_ttl", "json_or", "now", "read_points", "run_timings"]
