"""Run bookkeeping for the API: validate and queue runs, read their state from Redis or disk.

A run lives in Redis while it is queued, running and for a while after (the key
layout is in :mod:`service.runstate`); an ended run (done, failed or cancelled) is also a
result document in the store (``models_store/runs/<id>.json``), which the API serves
once Redis no longer has it (flushed, restarted without persistence, expired).

Reading a run only reads: it says when no live worker can make progress (``warning``).
Repairs — re-queuing runs whose workers died or whose tasks were lost, storing ended
runs whose writer died — are the reaper's (:mod:`service.runstate.reaper`), which the
API runs on a timer. No checkpoint is loaded here:
references are resolved against the store, compatibility is checked from safetensors
headers, and the point list is ordered with the pure functions of :mod:`basin.grid`.
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import re
import time
from datetime import datetime
from typing import Any, cast

import redis
import redis.asyncio as aioredis

from backend.app.api.errors import carried_references
from basin.checkpoints import read_config
from basin.errors import BasinError, IncompatibleCheckpoints, InvalidSpec
from basin.generation import check_prompts, label_weights
from basin.names import name_ids
from basin.paths import path_class, refs_of
from basin.results import point_view
from basin.scope_regex import compile_scope
from basin.spec import SCOPE_PRESETS, RunSpec, parse_spec
from service.documents import build_document
from service.errors import InvalidCursor, RunConflict, RunNotFound
from service.jobs import JobConflict, JobNotFound, cancel_job
from service.jobs.limits import JobLimits, over_run_limits, scope_over_limit
from service.jobs.run import RUN, public_tags
from service.runstate import (
    ACTIVE_KEY,
    RUNS_KEY,
    TERMINAL,
    RunKeys,
    alive_workers,
    json_or,
)
from service.runstate.create import create_run, point_order
from service.runstate.presence import beat_keys, heartbeats, parse_beats, queue_recent_names
from service.runstate.reads import parse_points, stream_start
from service.store import NotFound, Store

logger = logging.getLogger(__name__)


#: What a run id can be (``secrets.token_urlsafe(16)`` gives 22 of these characters).
#: Anything else names no run and never reaches a Redis key or a file name.
RUN_ID_RE = re.compile(r"[A-Za-z0-9_-]{8,64}")
#: Cursors the points routes hand out: a Redis stream id (``1700000000000-0``), ``store``
#: (``store-<n>`` for events), or a start (``""``, ``-``, ``0``, ``0-0``).
CURSOR_RE = re.compile(r"|-|store(?:-\d{1,9})?|\d{1,19}(?:-\d{1,19})?")


def check_run_id(run_id: str) -> str:
    """``run_id`` itself when it can name a run, else :class:`RunNotFound` (404)."""
    if not RUN_ID_RE.fullmatch(run_id):
        raise RunNotFound(run_id)
    return run_id


def check_cursor(cursor: str | None) -> str | None:
    """``cursor`` itself when this API could have given it, else :class:`InvalidCursor` (422)."""
    if cursor is not None and not CURSOR_RE.fullmatch(cursor):
        raise InvalidCursor(
            f"invalid cursor {cursor[:80]!r}: pass the 'cursor' of the previous answer (a stream "
            "id such as 1700000000000-0, or 'store'), or leave 'after' out to start from the "
            "first point"
        )
    return cursor


NO_WORKER = "no worker is alive; the run will start when one joins"
NO_WORKER_RUNNING = "no worker is alive; the run will continue when one joins"


# ---- validation ---------------------------------------------------------------------------


#: This server's caps on one run: the job kernel's limits (:mod:`service.jobs.limits`),
#: the same for every kind of job.
SpecLimits = JobLimits


def over_limits(spec: RunSpec, limits: JobLimits) -> list[str]:
    """One line per cap ``spec`` exceeds: the value, the limit and the setting that raises it."""
    return over_run_limits(spec, limits)


def resolve_spec(
    body: Any,
    store: Store,
    *,
    limits: SpecLimits | None = None,
    names: dict[str, str] | None = None,
    tags: dict[str, dict[str, Any]] | None = None,
) -> RunSpec:
    """Parse ``body`` as a RunSpec, check it against ``limits``, rewrite its references to
    store ids and check them.

    ``names``, when given, is filled with store id → the item's name in the store (shown as
    the anchors' names instead of sha256 ids), whichever reference the request used: a name,
    an id (what the dashboard's form sends) or an id prefix. ``tags``, when given, is filled
    with checkpoint id → its tags. Both are recorded with the run, so its stored document
    names its checkpoints even after they are renamed or deleted.

    Raises :class:`InvalidSpec` (bad spec; over a cap, listing every cap exceeded; a scope
    regex RE2 cannot compile or too long), :class:`UnknownReference` (a checkpoint or
    dataset the store does not have: invalid input, not a missing URL),
    :class:`CheckpointError` (unreadable files) or :class:`IncompatibleCheckpoints` (naming
    the tensors; not with ``on_mismatch: hold``, where the engine keeps them at the first
    checkpoint).
    """
    try:
        return _resolve_spec(body, store, limits=limits, names=names, tags=tags)
    except (InvalidSpec, IncompatibleCheckpoints) as e:
        # messages name checkpoints, not 64-hex ids (the form sends ids)
        text = name_ids(str(e), lambda i: _store_name(store, i))
        if text == str(e):
            raise
        if isinstance(e, IncompatibleCheckpoints):
            raise IncompatibleCheckpoints(text, e.mismatches) from None
        raise InvalidSpec(text) from None


def _store_name(store: Store, ident: str) -> str | None:
    for get in (store.get_checkpoint, store.get_dataset):
        try:
            return str(get(ident).get("name") or "") or None
        except (NotFound, BasinError):
            continue
    return None


def _resolve_spec(
    body: Any,
    store: Store,
    *,
    limits: SpecLimits | None = None,
    names: dict[str, str] | None = None,
    tags: dict[str, dict[str, Any]] | None = None,
) -> RunSpec:
    limits = limits or SpecLimits()
    if not isinstance(body, dict):
        raise InvalidSpec("invalid spec: the body must be a JSON object (a RunSpec)")
    from backend.app.tagselect import expand_tag_selection

    body = expand_tag_selection(body, store)  # a trajectory's checkpoints picked by tag
    spec = parse_spec(body)
    over = over_limits(spec, limits)
    if over:
        raise InvalidSpec("invalid spec: " + "; ".join(over))
    if spec.scope not in SCOPE_PRESETS:  # the regex the engine will compile: refused here
        too_long = scope_over_limit(spec.scope, limits)
        if too_long:
            raise InvalidSpec(f"invalid spec: {too_long}")
        try:
            compile_scope(spec.scope)
        except InvalidSpec as e:
            raise InvalidSpec(f"invalid spec: scope: {e}") from None
    seen: dict[str, str] = {} if names is None else names
    seen_tags: dict[str, dict[str, Any]] = {} if tags is None else tags

    def ckpt(ref: str) -> str:
        manifest = store.get_checkpoint(ref)
        ident = manifest["id"]
        seen.setdefault(ident, str(manifest.get("name") or ref))
        if manifest.get("tags"):
            seen_tags.setdefault(ident, dict(manifest["tags"]))
        return ident

    def data(ref: str) -> str:
        manifest = store.get_dataset(ref)
        ident = manifest["id"]
        seen.setdefault(ident, str(manifest.get("name") or ref))
        return ident

    with carried_references():
        resolved = spec.map_refs(ckpt, data)
    check_compatibility(resolved, store, names=seen)
    check_generation(resolved, store, limits, names=seen)
    check_opens(resolved, store, names=seen)
    return resolved


def run_estimate(r: redis.Redis, store: Store, spec: RunSpec) -> dict[str, Any] | None:
    """What ``spec`` will cost on this server (:func:`service.estimate.summary`), spread over
    the alive workers; None when it cannot be told (the model's size unknown)."""
    from service.estimate import summary

    try:
        workers = len(alive_workers(r))
    except redis.RedisError:
        workers = 1
    try:
        return summary(store, spec.model_dump(mode="json"), spec.planned_points, workers=max(workers, 1))
    except Exception:  # an estimate never refuses a spec
        logger.exception("no estimate for a spec")
        return None


def check_generation(spec: RunSpec, store: Store, limits: SpecLimits,
                     *, names: dict[str, str] | None = None) -> None:
    """A generation run's checks before any worker starts: the scorer has a positive label (and
    every label ``label_scores`` names),
    the prompts dataset has prompts, the sampling budget fits (``BASIN_MAX_GENERATED_TOKENS``)."""
    gen = spec.generation
    if gen is None:
        return
    prompts = store.get_dataset(gen.prompts or spec.dataset)
    check_prompts(spec, prompts["columns"], int(prompts["rows"]), max_tokens=limits.generated_tokens)
    if gen.scorer:
        config = read_config(store.resolver().checkpoint(gen.scorer).config_dir)
        label = (names or {}).get(gen.scorer) or gen.scorer[:12]
        try:
            label_weights(config, gen.positive_label, gen.label_scores, scorer=f"scorer {label!r}")
        except InvalidSpec as e:
            raise InvalidSpec(f"invalid spec: {e}") from None


def check_compatibility(
    spec: RunSpec, store: Store, *, names: dict[str, str] | None = None
) -> None:
    """The engine's compatibility check (:func:`basin.opening.check_compatible`: headers
    only, under the model's own names, one message) over the path's checkpoints.

    ``names`` (store id → the reference as the user wrote it) names the checkpoints in the
    message and in each mismatch's reason; ids without a name are shortened to 12 digits.
    """
    from basin.opening import check_compatible
    from basin.precheck import check_architectures

    refs = path_class(spec.path.type).refs_in(spec.path)  # not the tokenizer, scorer or reference
    if spec.space == "adapter":
        check_adapter_space(refs, store, names=names or {})
        return
    resolver = store.resolver()
    names = names or {}
    named = [(names.get(r) or r[:12], resolver.checkpoint(r)) for r in refs]
    check_architectures(named)  # even with hold: no holding mixes BERT with Llama
    if len(refs) < 2 or spec.on_mismatch == "hold":
        return  # with hold the engine keeps every mismatched tensor at the first checkpoint
    check_compatible(spec.task, named)


def check_opens(spec: RunSpec, store: Store, *, names: dict[str, str] | None = None) -> None:
    """Every other test the worker's ``open_model`` runs before its first point
    (:func:`basin.precheck.precheck`: the task's model holds the first checkpoint, the scope
    moves something, a tokenizer exists), so Check refuses what the worker would."""
    from basin.precheck import precheck

    precheck(spec, store.resolver(), labels=names or {})


def check_adapter_space(refs: list[str], store: Store, *, names: dict[str, str]) -> None:
    """``space: adapter`` mixes the adapters' own tensors: every checkpoint of the path must be
    a PEFT adapter, all on one base, of one type, rank and set of target modules."""
    first: dict[str, Any] | None = None
    for r in refs:
        m = store.get_checkpoint(r)
        label = names.get(r) or r[:12]
        a = m.get("adapter")
        if not a:
            raise InvalidSpec(
                f"invalid spec: space: adapter interpolates adapter tensors, but {label!r} is a full checkpoint; "
                "use space: merged to put full checkpoints and adapters on one path"
            )
        if first is None:
            first = dict(m, label=label, ref=r)
            continue
        fa = first["adapter"]
        why = _bases_differ(first["ref"], r, store) if m.get("base") != first.get("base") else None
        if why:
            raise IncompatibleCheckpoints(
                f"space: adapter needs every adapter on one base: {first['label']!r} is on "
                f"{first.get('base_name') or str(first.get('base'))[:12]!r}, {label!r} on "
                f"{m.get('base_name') or str(m.get('base'))[:12]!r}, and the bases {why}", [])
        for key in ("peft_type", "r", "target_modules"):
            if a.get(key) != fa.get(key):
                raise IncompatibleCheckpoints(
                    f"space: adapter needs adapters of one layout: {key} is {fa.get(key)!r} in "
                    f"{first['label']!r} but {a.get(key)!r} in {label!r} (space: merged mixes them)", [])


def _bases_differ(ref_a: str, ref_b: str, store: Store) -> str | None:
    """Two adapters on different stored bases still share an adapter-space path when the bases
    differ only in modules both adapters replace (a tune family's seeds on their own θ0s): the
    engine's own test, :func:`basin.adapters.base_difference` (its words, or ``None``)."""
    from basin.adapters import base_difference, saved_modules

    resolver = store.resolver()
    a, b = resolver.checkpoint(ref_a), resolver.checkpoint(ref_b)
    if a.adapter is None or b.adapter is None:
        return "are two checkpoints"
    saved = set(saved_modules(a.adapter)) & set(saved_modules(b.adapter))
    return base_difference(a.base_source(), b.base_source(), sorted(saved))


# ---- queueing: service.runstate.create (the fit worker queues its evaluation runs too)


# ---- reading ------------------------------------------------------------------------------


def _f(v: Any) -> float | None:
    try:
        return float(v) if v not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _timestamp(v: Any) -> float | None:
    """Unix seconds from a float or an ISO-8601 string."""
    if isinstance(v, str):
        try:
            return datetime.fromisoformat(v).timestamp()
        except ValueError:
            return None
    return _f(v)


def _brief(spec: dict) -> dict:
    path = spec.get("path", {})
    refs = refs_of(path) if isinstance(path, dict) else []
    return {
        "type": path.get("type"),
        "checkpoints": refs,
        "dataset": spec.get("dataset"),
        "name": spec.get("name"),
    }


def _redis_run(r: redis.Redis, run_id: str) -> dict | None:
    h = r.hgetall(RunKeys(run_id).run)
    return h if h and "spec" in h else None


def _warning(status: str | None, workers: list[dict]) -> str | None:
    """What a reader should know: no worker is alive to make progress on an unfinished run."""
    if status in TERMINAL or workers:
        return None
    return NO_WORKER if status == "queued" else NO_WORKER_RUNNING


def _eta(h: dict) -> float | None:
    """Seconds left for a run in Redis (from its rate of fresh points), 0 when done."""
    total, done, started = int(h.get("total", 0)), int(h.get("done", 0)), _f(h.get("started"))
    if h.get("status") == "running" and started and done:
        fresh = max(done - int(h.get("cached", 0)), 1)
        rate = fresh / max(time.time() - started, 1e-6)
        return round((total - done) / rate, 1)
    return 0.0 if h.get("status") == "done" else None


def _labels(store: Store, names: dict[str, str], spec: dict) -> dict[str, str]:
    """Store id → what to call it now: its name in the store (renamed since?), else the name
    it had when the run was made (deleted since), else the id itself. For every id the run
    names (checkpoints, dataset, tokenizer...): a page needs no listing of the whole store."""
    ids = dict.fromkeys([*names, *_brief(spec)["checkpoints"], spec.get("dataset")])
    out: dict[str, str] = {}
    for ident in ids:
        if not isinstance(ident, str) or not ident:
            continue
        label = names.get(ident) or ident
        if re.fullmatch(r"[0-9a-f]{64}", ident):  # one manifest read by id, never a scan
            for base, get in ((store.checkpoints_dir, store.get_checkpoint),
                              (store.datasets_dir, store.get_dataset)):
                if (base / ident / "manifest.json").is_file():
                    try:
                        label = str(get(ident).get("name") or label)
                    except NotFound:  # deleted meanwhile
                        pass
                    break
        out[ident] = label
    return out


def run_detail(r: redis.Redis, store: Store, run_id: str, *, url: str) -> dict:
    """Everything ``GET /api/runs/{id}`` shows, from Redis or from the stored document.

    ``warning`` is set when no worker is alive to make progress.
    """
    h = _redis_run(r, run_id)
    if h is None:
        return _doc_detail(store, _stored(store, run_id), run_id, url=url)
    alive = alive_workers(r)
    warning = _warning(h.get("status"), alive)
    spec = json_or(h["spec"], {})
    total, done = int(h.get("total", 0)), int(h.get("done", 0))
    created, started, finished = _f(h.get("created")), _f(h.get("started")), _f(h.get("finished"))
    eta = _eta(h)
    names = json_or(h.get("names"), {})
    serving = [w for w in alive if w.get("run") == run_id]
    return {
        "id": run_id,
        "url": url,
        "spec": spec,
        **_brief(spec),
        "names": names,
        "labels": _labels(store, names, spec),
        "tags": public_tags(json_or(h.get("tags"), {})),
        "status": h["status"],
        "done": done,
        "total": total,
        "progress": round(done / total, 4) if total else 0.0,
        "eta_s": eta,
        "created": created,
        "started": started,
        "finished": finished,
        "summary": json_or(h.get("summary")),
        "anchors": json_or(h.get("anchors"), []),
        "error": h.get("error") or None,
        "workers": [
            {"name": w.get("name"), "device": w.get("device"), "index": w.get("index")}
            for w in serving
        ],
        "warning": warning,
        "evaluations": int(h.get("evaluations", 0)),
        "cached_points": int(h.get("cached", 0)),
        "requeued": int(h.get("requeued", 0)),
        "timings": json_or(h.get("timings")),
        "source": "redis",
        **_cost_and_queue(r, store, run_id, h, spec, alive),
    }


def _left_estimate(store: Store, spec: dict, left: int, workers: int) -> dict[str, Any] | None:
    from service.estimate import summary

    try:
        return summary(store, spec, left, workers=max(workers, 1)) if left > 0 else None
    except Exception:  # an estimate never breaks a page
        logger.exception("no estimate for a run")
        return None


def _cost_and_queue(r: redis.Redis, store: Store, run_id: str, h: dict, spec: dict,
                    alive: list[dict]) -> dict[str, Any]:
    """``estimate`` (the remaining points' cost) while unfinished, and ``queue`` while queued:
    the runs before it (created earlier, unfinished; a person's run skips background work,
    which yields to it), the alive workers and when it should start."""
    from service.runstate.create import BACKGROUND
    from service.runstate.keys import ACTIVE_KEY

    status = h.get("status")
    if status in TERMINAL:
        return {}
    workers = len(alive)
    left = max(int(h.get("total", 0)) - int(h.get("done", 0)), 0)
    out: dict[str, Any] = {"estimate": _left_estimate(store, spec, left, workers)}
    if status != "queued":
        return out
    background = h.get("priority") == BACKGROUND
    created = _f(h.get("created")) or 0.0
    ahead = []
    for rid in cast("list[str]", r.zrange(ACTIVE_KEY, 0, -1)):
        if rid == run_id:
            continue
        o = _redis_run(r, rid)
        if o is None or o.get("status") in TERMINAL:
            continue
        o_bg = o.get("priority") == BACKGROUND
        o_created = _f(o.get("created")) or 0.0
        # FIFO, except that background work yields to a person's run
        if (o_bg and not background) or (o_created > created and not (background and not o_bg)):
            continue
        o_spec = json_or(o.get("spec"), {})
        o_left = max(int(o.get("total", 0)) - int(o.get("done", 0)), 0)
        est = _left_estimate(store, o_spec, o_left, workers)
        path = o_spec.get("path") or {}
        ahead.append({"name": o_spec.get("name") or f"a {path.get('type', '')} run".replace("a  run", "a run"),
                      "points_left": o_left, "status": o.get("status"), "background": o_bg,
                      "eta_s": est["wall_s"] if est else None})
    known = [float(a["eta_s"]) for a in ahead if isinstance(a["eta_s"], (int, float))]
    out["queue"] = {
        "position": len(ahead) + 1,
        "ahead": ahead,
        "workers": workers,
        "background": background,
        "start_in_s": (round(sum(known), 1) if len(known) == len(ahead) else None) if workers else None,
    }
    return out


def _stored(store: Store, run_id: str) -> dict:
    doc = store.load_run(run_id) if _plausible_id(run_id) else None
    if doc is None:
        raise RunNotFound(run_id)
    return doc


def _plausible_id(run_id: str) -> bool:
    return RUN_ID_RE.fullmatch(run_id) is not None


def _doc_detail(store: Store, doc: dict, run_id: str, *, url: str) -> dict:
    spec = doc.get("spec", {})
    n = len(doc.get("points", []))
    total = int(doc.get("total") or n)  # documents before cancelled/failed were stored: n
    status = doc.get("status", "done")
    return {
        "id": run_id,
        "url": url,
        "spec": spec,
        **_brief(spec),
        "names": doc.get("names", {}),
        "labels": _labels(store, doc.get("names") or {}, spec),
        "tags": public_tags(doc.get("tags") or {}),
        "status": status,
        "done": n,
        "total": total,
        "progress": round(n / total, 4) if total else 1.0,
        "eta_s": 0.0 if status == "done" else None,
        "created": doc.get("created"),
        "started": None,
        "finished": doc.get("finished"),
        "summary": doc.get("summary"),
        "anchors": doc.get("anchors", []),
        "error": doc.get("error"),
        "workers": [],
        "warning": None,
        "evaluations": (doc.get("timings") or {}).get("evaluations"),
        "cached_points": (doc.get("timings") or {}).get("cached_points"),
        "requeued": 0,
        "timings": doc.get("timings"),
        "source": "store",
    }


#: The run-hash fields a poll reads (``spec`` only says the run is in Redis; it is small).
POLL_FIELDS = ["spec", "status", "done", "total", "started", "cached", "error"]


def run_points(
    r: redis.Redis,
    store: Store,
    run_id: str,
    after: str | None,
    *,
    samples: bool = False,
) -> dict:
    """Points recorded after ``after`` (a cursor from an earlier answer; none = from the start),
    as views (:func:`basin.results.point_view`: coordinates, metrics, intervals, ensemble;
    ``samples`` only when asked), not the stored records: per-example columns stay in the
    document and its export.

    From Redis the cursor is the last stream id. A run served from the store answers all
    its points at once with cursor ``"store"`` (and none for ``after="store"``); a
    Redis cursor on a run that is now only on disk gets all points and ``reset: true``.
    ``workers`` names the live workers draining the run; ``warning`` says when no worker
    is alive.
    """
    from_store, start, k = _poll_start(run_id, after)
    # one round trip: the run's fields (status first: once it has ended, every point is in
    # the stream), the points after the cursor, the recent worker names; then their heartbeats
    pipe = r.pipeline(transaction=False)
    _queue_poll(pipe, k, start)
    vals, entries, names = pipe.execute()
    h = {f: v for f, v in zip(POLL_FIELDS, vals, strict=True) if v is not None}
    if "spec" in h:
        return _live_page(h, entries, heartbeats(r, names), run_id, start, from_store, samples)
    return _stored_page(store, run_id, after, samples)


async def run_points_async(
    r: aioredis.Redis,
    store: Store,
    run_id: str,
    after: str | None,
    *,
    samples: bool = False,
) -> dict:
    """:func:`run_points` on an asyncio Redis client: the same reads and the same answer, with
    no thread (a stored run's document is read in one)."""
    from_store, start, k = _poll_start(run_id, after)
    pipe = r.pipeline(transaction=False)
    _queue_poll(pipe, k, start)
    vals, entries, names = await pipe.execute()
    h = {f: v for f, v in zip(POLL_FIELDS, vals, strict=True) if v is not None}
    if "spec" in h:
        keys = beat_keys(names)
        alive = parse_beats(await r.mget(keys)) if keys else []
        return _live_page(h, entries, alive, run_id, start, from_store, samples)
    return await asyncio.to_thread(_stored_page, store, run_id, after, samples)


def _poll_start(run_id: str, after: str | None) -> tuple[bool, str, RunKeys]:
    from_store = (after or "").startswith("store")  # a stored run back in Redis: restart
    return from_store, "-" if from_store else after or "-", RunKeys(run_id)


def _queue_poll(pipe: Any, k: RunKeys, start: str) -> None:
    pipe.hmget(k.run, POLL_FIELDS)
    pipe.xrange(k.points, min=stream_start(start), max="+")
    queue_recent_names(pipe)


def _live_page(
    h: dict, entries: Any, alive: list[dict], run_id: str, start: str, from_store: bool, samples: bool
) -> dict:
    pts, last = parse_points(entries)
    live: dict[str, Any] = {
        "points": [point_view(p, samples=samples) for p in pts],
        "cursor": last or (start if start != "-" else "0-0"),
        "status": h.get("status", "queued"),
        "done": int(h.get("done", 0)),
        "total": int(h.get("total", 0)),
        "eta_s": _eta(h),
        "workers": [w.get("name") for w in alive if w.get("run") == run_id],
        "warning": _warning(h.get("status"), alive),
        "error": h.get("error") or None,
    }
    if from_store:
        live["reset"] = True
    return live


def _stored_page(store: Store, run_id: str, after: str | None, samples: bool) -> dict:
    doc = _stored(store, run_id)
    pts = doc.get("points", [])
    status = doc.get("status", "done")
    out = {
        "points": [] if after == "store" else [point_view(p, samples=samples) for p in pts],
        "cursor": "store",
        "status": status,
        "done": len(pts),
        "total": int(doc.get("total") or len(pts)),
        "eta_s": 0.0 if status == "done" else None,
        "workers": [],
        "warning": None,
        "error": doc.get("error"),
    }
    if after not in (None, "", "store", "-", "0", "0-0"):
        out["reset"] = True
    return out


def list_runs(r: redis.Redis, store: Store, *, public_url: str = "") -> list[dict]:
    """Runs newest first: those in Redis, then stored runs Redis no longer has (from the
    store's runs index, not from the documents)."""
    ids = cast("list[str]", r.zrevrange(RUNS_KEY, 0, -1))  # decode_responses
    pipe = r.pipeline()
    for run_id in ids:
        pipe.hmget(
            RunKeys(run_id).run, ["spec", "status", "created", "done", "total", "error", "names"]
        )
    out: list[dict] = []
    seen = set()
    for run_id, vals in zip(ids, pipe.execute(), strict=True):
        spec_json, status, created, done, total, error, names = vals
        if spec_json is None:
            continue
        spec = json_or(spec_json, {})
        seen.add(run_id)
        out.append(
            {
                "id": run_id,
                "url": f"{public_url}/runs/{run_id}",
                "spec": spec,
                **_brief(spec),
                "names": json_or(names, {}),
                "status": status,
                "created": _f(created),
                "done": int(done or 0),
                "total": int(total or 0),
                "error": error or None,
            }
        )
    for entry in store.list_runs():  # the store's runs index: no document is read
        run_id = str(entry.get("id") or "")
        if not run_id or run_id in seen:
            continue
        spec = entry.get("spec") or {}
        n = int(entry.get("points") or 0)
        out.append(
            {
                "id": run_id,
                "url": f"{public_url}/runs/{run_id}",
                "spec": spec,
                **_brief(spec),
                "names": entry.get("names") or {},
                "status": entry.get("status") or "done",
                "created": _timestamp(entry.get("created")),
                "done": n,
                "total": int(entry.get("total") or n),
                "error": entry.get("error"),
            }
        )
    out.sort(key=lambda e: e.get("created") or 0, reverse=True)
    return out


def result_document(r: redis.Redis, store: Store, run_id: str) -> dict:
    """The result document: the stored one when the run ended, else built from Redis so far
    (its recorded store tags without other jobs' ids, :func:`public_tags`: a document stored
    before they were left out still has them)."""
    try:
        doc = _stored(store, run_id)
    except RunNotFound:
        found = build_document(r, run_id)
        if found is None:
            raise RunNotFound(run_id) from None
        doc = found
    if doc.get("tags"):
        doc = {**doc, "tags": public_tags(doc["tags"])}
    return doc


def to_csv(doc: dict) -> str:
    """One row per point: ``index, <coords...>, <metrics...>, <metric>_lo, <metric>_hi...``
    (columns in first-seen order; the 95 % interval columns only for metrics that have one)."""
    pts = sorted(doc.get("points", []), key=lambda p: p["index"])
    coords: list[str] = []
    metrics: list[str] = []
    bounded: list[str] = []
    for p in pts:
        coords += [c for c in p.get("coords", {}) if c not in coords]
        metrics += [m for m in p.get("metrics", {}) if m not in metrics]
        bounded += [m for m in p.get("intervals") or {} if m not in bounded]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", *coords, *metrics, *(f"{m}_{e}" for m in bounded for e in ("lo", "hi"))])
    for p in pts:
        iv = p.get("intervals") or {}
        w.writerow(
            [
                p["index"],
                *(p["coords"].get(c, "") for c in coords),
                *(p["metrics"].get(m, "") for m in metrics),
                *(iv[m][k] if m in iv else "" for m in bounded for k in (0, 1)),
            ]
        )
    return buf.getvalue()


# ---- writing ------------------------------------------------------------------------------


def cancel_run(r: redis.Redis, run_id: str, store: Store | None = None) -> str:
    """Stop a queued or running run: workers see the status before their next point, and
    the record script refuses the point in hand. With a ``store``, the run's document
    (points so far, ``status: cancelled``) is written so its share link outlives Redis.

    Through the job kernel (:func:`service.jobs.cancel_job`, kind ``run``), atomic
    (``service/runstate/lua/end.lua``): raises :class:`RunConflict` when the run has
    already ended or a worker is finishing it (every point is recorded).
    """
    try:
        return cancel_job(r, RUN, run_id, store=store)
    except JobNotFound:
        raise RunNotFound(run_id) from None
    except JobConflict as e:
        raise RunConflict(str(e)) from None


def delete_run(r: redis.Redis, store: Store, run_id: str) -> None:
    """Remove a run everywhere (Redis keys and the stored document); running ones stop."""
    k = RunKeys(run_id)
    in_redis = r.exists(k.run) > 0
    stored = _plausible_id(run_id) and store.has_run(run_id)  # damaged documents too
    if not in_redis and not stored:
        raise RunNotFound(run_id)
    pipe = r.pipeline(transaction=True)
    pipe.delete(*k.all())
    pipe.zrem(RUNS_KEY, run_id)
    pipe.zrem(ACTIVE_KEY, run_id)
    pipe.execute()
    if _plausible_id(run_id):  # also when a writer is storing it right now (it checks too)
        store.delete_run(run_id)


__all__ = [
    "NO_WORKER",
    "InvalidCursor",
    "RunConflict",
    "RunNotFound",
    "SpecLimits",
    "check_cursor",
    "check_run_id",
    "cancel_run",
    "create_run",
    "delete_run",
    "list_runs",
    "over_limits",
    "point_order",
    "resolve_spec",
    "result_document",
    "run_detail",
    "run_points",
    "run_points_async",
    "to_csv",
]
