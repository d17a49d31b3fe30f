"""Result documents: built from a run's Redis state, written to the store once it ended."""

from __future__ import annotations

import time
from typing import Any

import redis

from basin.results import run_document
from service.runstate.keys import TERMINAL, RunKeys
from service.runstate.reads import _s, json_or, read_points, run_timings


def build_document(client: redis.Redis, run_id: str) -> dict | None:
    """The result document of a run from its Redis state (``None`` when Redis lacks it).

    ``{schema_version, id, spec, points (sorted by index), anchors, names, tags, summary,
    timings, status, created, finished, total, error}``: the contract's document
    (:func:`basin.results.run_document`, the one builder) plus the service fields.
    Once the status is terminal, nothing changes any more, so two builders agree.
    """
    k = RunKeys(run_id)
    h = {_s(a): _s(b) for a, b in client.hgetall(k.run).items()}
    if "spec" not in h:
        return None
    points, _ = read_points(client, run_id)  # after the status: a terminal stream is complete
    finished = float(h["finished"]) if h.get("finished") else None
    created = float(h.get("created") or 0.0) or None
    return run_document(
        id=run_id,
        spec=json_or(h["spec"], {}),
        points=points,
        anchors=json_or(h.get("anchors"), []),
        names=json_or(h.get("names"), {}),
        tags=json_or(h.get("tags"), {}),
        summary=json_or(h.get("summary")),
        timings=json_or(h.get("timings")) or run_timings(h, finished or time.time(), len(points)),
        status=h.get("status", "queued"),
        created=created,
        finished=finished,
        total=int(h.get("total") or len(points)),
        error=h.get("error") or None,
    )


def persist_run(client: redis.Redis, store: Any, run_id: str, *,
                ttl_s: int | None = None) -> bool:
    """Write an ended run's document with ``store.save_run`` (idempotent); True when written.

    Runs that have not ended are not written. If the run is deleted while the document is
    being written, the document is removed again, so a delete never leaves it behind.
    Once written, the run's Redis keys expire after ``ttl_s`` seconds (default
    ``Settings.finished_run_ttl_s``; 0 = never): reads then come from the document.
    """
    k = RunKeys(run_id)
    doc = build_document(client, run_id)
    if doc is None or doc["status"] not in TERMINAL:
        return False
    store.save_run(run_id, doc)
    if not client.hexists(k.run, "spec"):  # deleted meanwhile: do not resurrect it
        store.delete_run(run_id)
        return False
    client.hdel(k.run, "persist")
    expire_run(client, run_id, ttl_s)
    return True


def expire_run(client: redis.Redis, run_id: str, ttl_s: int | None = None) -> None:
    """Let a stored run's Redis keys expire after ``ttl_s`` seconds (0 = keep them)."""
    if ttl_s is None:
        from service.settings import get_settings

        ttl_s = get_settings().finished_run_ttl_s
    if not ttl_s or ttl_s <= 0:
        return
    pipe = client.pipeline(transaction=False)
    for key in RunKeys(run_id).all():
        pipe.expire(key, int(ttl_s))
    pipe.execute()
