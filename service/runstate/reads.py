"""Reading a run's state from Redis: its points, timings (the live workers: :mod:`.presence`)."""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

from service.runstate.keys import RunKeys
from service.runstate.presence import alive_workers, heartbeat_ttl


def _s(v: Any) -> str:
    """A Redis reply as text (the clients here may or may not decode responses)."""
    return v.decode() if isinstance(v, bytes) else str(v)


def read_points(
    client: redis.Redis, run_id: str, after: str = "-", count: int | None = None
) -> tuple[list[dict], str | None]:
    """Points in the run's stream strictly after stream id ``after``; returns (points, last id)."""
    return parse_points(
        client.xrange(RunKeys(run_id).points, min=stream_start(after), max="+", count=count)
    )


def stream_start(after: str) -> str:
    """XRANGE's ``min`` for the entries strictly after stream id ``after`` (or all of them)."""
    return "-" if after in ("", "-", "0", "0-0") else "(" + after


def parse_points(entries: Any) -> tuple[list[dict], str | None]:
    """XRANGE's answer on a points stream as (point records, last stream id)."""
    # redis-py types each entry's id and fields Optional; XRANGE gives [(id, {field: value})]
    got = cast("list[tuple[str | bytes, dict[str | bytes, str | bytes]]]", entries)
    pts = [json.loads(_s(fields.get("point") or fields.get(b"point"))) for _, fields in got]
    last = _s(got[-1][0]) if got else None
    return pts, last


def computable(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Points with each ``null`` metric (a diverged point's inf/nan, stored as strict JSON)
    read back as ``nan``, for the computations of a run (summary, refinement): they treat a
    NaN as a diverged value, where ``None`` would be a ``TypeError``."""
    out = []
    for p in points:
        q = dict(p)
        for field in ("metrics", "ensemble"):
            values = q.get(field)
            if isinstance(values, dict) and any(v is None for v in values.values()):
                q[field] = {k: float("nan") if v is None else v for k, v in values.items()}
        out.append(q)
    return out


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


__all__ = [
    "alive_workers",
    "heartbeat_ttl",
    "json_or",
    "now",
    "parse_points",
    "read_points",
    "run_timings",
    "stream_start",
]
