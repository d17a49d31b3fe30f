"""Routes: runs — create (validated, queued), list, status, points (poll and SSE), cancel, delete,
export. The bookkeeping itself is in :mod:`backend.app.runs`."""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal, cast

import redis
import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from backend.app import runs as book
from backend.app.api.deps import RedisDep, SettingsDep, StoreDep, WriteAuth
from backend.app.api.errors import FilesUnavailable, ServerBusy, responses
from backend.app.api.responses import StrictJSONResponse
from backend.app.schemas.runs import (
    SPEC_BODY,
    PointsPage,
    RunCancelled,
    RunCreated,
    RunListItem,
    RunPublic,
    RunValidated,
)
from basin import strict_json
from basin.analysis.forgetting import dataset_rows, forgetting, forgetting_csv
from basin.errors import InvalidSpec
from basin.results import point_view
from service.errors import NotFound
from service.runstate import TERMINAL, RunKeys

logger = logging.getLogger(__name__)

router = APIRouter(tags=["runs"])


async def _spec_body(request: Request) -> Any:
    """The raw JSON body: :func:`book.resolve_spec` parses it, with Basin's messages."""
    try:
        return await request.json()
    except ValueError as e:  # also UnicodeDecodeError
        raise InvalidSpec(f"invalid spec: the body is not JSON ({e})") from None


#: The create/validate body, parsed by ``parse_spec``; :data:`SPEC_BODY` documents it.
SpecBody = Annotated[Any, Depends(_spec_body)]


async def _run_id(run_id: str) -> str:
    """The ``{run_id}`` path parameter, 404 unless it can name a run (nothing else reaches
    Redis keys or file names)."""
    return book.check_run_id(run_id)


#: A ``{run_id}`` path parameter that can name a run (else 404 before anything is read).
RunId = Annotated[str, Depends(_run_id)]
#: The ``?after=`` cursor: one a previous answer gave (else 422 naming the problem).
Cursor = Annotated[
    str | None,
    Query(max_length=64, description="the cursor of the previous answer; none = from the start"),
]


def _url(settings, run_id: str) -> str:
    return f"{settings.public_url.rstrip('/')}/runs/{run_id}"


@router.post(
    "/runs/validate",
    response_model=RunValidated,
    openapi_extra=SPEC_BODY,
    responses=responses(422),
)
def validate_run(spec: SpecBody, settings: SettingsDep, store: StoreDep, r: RedisDep) -> RunValidated:
    """Check a spec exactly as creating it would (references, compatibility, size); queue nothing.
    With the estimate of what it will cost on this server (``estimate``: measured from the
    finished runs' timings; a warning and cheaper variants above ~10 minutes)."""
    resolved = book.resolve_spec(spec, store, limits=book.SpecLimits.from_settings(settings))
    return RunValidated(num_points=resolved.num_points, spec=resolved,
                        estimate=book.run_estimate(r, store, resolved))


@router.post(
    "/runs",
    status_code=201,
    response_model=RunCreated,
    openapi_extra=SPEC_BODY,
    responses=responses(422, 503),
    dependencies=[WriteAuth],
)
def create_run(
    spec: SpecBody, settings: SettingsDep, store: StoreDep, r: RedisDep,
    background: Annotated[bool, Query(description="background work (the demo's ready run): its "
                                      "worker yields, between two points, to any run a person "
                                      "submitted that waits")] = False,
) -> RunCreated:
    """Validate a spec, queue its points (coarse to fine) and return the run's id and share link."""
    names: dict[str, str] = {}
    tags: dict[str, dict[str, Any]] = {}
    limits = book.SpecLimits.from_settings(settings)
    resolved = book.resolve_spec(spec, store, limits=limits, names=names, tags=tags)
    run_id = book.create_run(
        r, resolved, redis_url=settings.redis_url, queue=settings.task_queue, names=names,
        tags=tags, limits=limits, background=background,
    )
    return RunCreated(id=run_id, url=_url(settings, run_id))


@router.get("/runs", response_model=list[RunListItem], responses=responses(401, 503))
def list_runs(settings: SettingsDep, store: StoreDep, r: RedisDep) -> list[dict[str, Any]]:
    """All runs, newest first: id, type, checkpoints, status, created, done/total.

    Needs the API token when one is set (the list holds every share link); a run's own
    routes do not."""
    return book.list_runs(r, store, public_url=settings.public_url.rstrip("/"))


@router.get("/runs/{run_id}", response_model=RunPublic, responses=responses(404, 503))
def get_run(run_id: RunId, settings: SettingsDep, store: StoreDep, r: RedisDep) -> dict[str, Any]:
    """One run: spec, status, progress, ETA, summary, anchors, error, the workers serving it,
    and a ``warning`` when no worker is alive to make progress."""
    return book.run_detail(r, store, run_id, url=_url(settings, run_id))


@router.get(
    "/runs/{run_id}/points",
    response_model=PointsPage,
    response_model_exclude_unset=True,  # ``reset`` only when it is true
    responses=responses(404, 422, 503),
)
async def get_points(
    run_id: RunId,
    request: Request,
    store: StoreDep,
    after: Cursor = None,
    samples: Annotated[bool, Query(description="also each point's kept generations")] = False,
) -> StrictJSONResponse:
    """Points recorded since ``after`` (the cursor of the previous answer) as views
    (coordinates, metrics, intervals, ensemble; samples when asked; the per-example columns
    are in the export), with the run's status, ETA, the workers draining it and a
    ``warning`` when no worker is alive.

    Answered as built (strict JSON from the stream as it was recorded: NaN → null), not validated again
    against :class:`PointsPage`, which documents it: every viewer polls this twice a
    second.

    Its Redis reads go through an asyncio client (:func:`_poll_redis`): no thread. In
    FastAPI's pool of 40 threads a hundred viewers' polls fought for the GIL (a poll of
    0.1 ms of work waited ~60 ms in the app)."""
    page = await book.run_points_async(
        _poll_redis(request), store, run_id, book.check_cursor(after), samples=samples
    )
    return StrictJSONResponse(page)


def _poll_redis(request: Request) -> aioredis.Redis:
    """The app's asyncio Redis client for polls, one per event loop (uvicorn runs one; a test
    client may start a loop per request, and a connection belongs to the loop it was made on)."""
    state = request.app.state
    clients = getattr(state, "poll_redis", None)
    if clients is None:
        clients = state.poll_redis = weakref.WeakKeyDictionary()
    loop = asyncio.get_running_loop()
    client = clients.get(loop)
    if client is None:
        client = clients[loop] = aioredis.Redis.from_url(
            state.settings.redis_url, decode_responses=True, socket_timeout=30
        )
    return client


def _sse(event: str, data: Any, event_id: str | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {strict_json.dumps(data)}\n\n".encode()


@router.get("/runs/{run_id}/events", responses=responses(404, 422, 503))
async def run_events(
    run_id: RunId,
    request: Request,
    store: StoreDep,
    r: RedisDep,
    last_event_id: Annotated[str | None, Header()] = None,
    after: Cursor = None,
    samples: Annotated[bool, Query(description="also each point's kept generations")] = False,
) -> StreamingResponse:
    """Server-Sent Events: one ``point`` event per point (``id:`` = stream id, resumable with
    ``Last-Event-ID``; the point's view, as ``/points`` serves it), then ``end`` with the
    final status."""
    start = book.check_cursor(last_event_id or after) or "0-0"
    in_redis = await asyncio.to_thread(lambda: r.hexists(RunKeys(run_id).run, "spec"))
    if not in_redis:
        doc = await asyncio.to_thread(book.result_document, r, store, run_id)
        return StreamingResponse(
            _doc_events(doc, start, samples),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    budget = _budget(request)
    if not budget.take():
        raise ServerBusy(
            f"this server already serves {budget.limit} event streams (BASIN_MAX_STREAMS); "
            f"try again in {STREAM_RETRY_AFTER_S} s, or poll /api/runs/{run_id}/points",
            retry_after=STREAM_RETRY_AFTER_S,
        )
    return _BudgetedStream(
        budget,
        _stream_events(budget.client(), run_id, start, samples),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


#: Seconds a client is asked to wait (``Retry-After``) when every stream slot is taken.
STREAM_RETRY_AFTER_S = 5


class _StreamBudget:
    """The event streams of one app: at most ``limit`` at once, sharing one Redis connection
    pool of ``limit`` connections (a stream holds one while its ``XREAD BLOCK`` waits), so
    sockets held by clients never become more Redis clients than that."""

    def __init__(self, redis_url: str, limit: int) -> None:
        self.limit = max(1, int(limit))
        self.active = 0
        self.pool = aioredis.BlockingConnectionPool.from_url(
            redis_url, max_connections=self.limit, timeout=10, decode_responses=True,
            socket_timeout=30,
        )

    def take(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def give_back(self) -> None:
        self.active -= 1

    def client(self) -> aioredis.Redis:
        return aioredis.Redis(connection_pool=self.pool)


def _budget(request: Request) -> _StreamBudget:
    state = request.app.state
    if getattr(state, "stream_budget", None) is None:
        settings = state.settings
        state.stream_budget = _StreamBudget(settings.redis_url, settings.max_streams)
    return state.stream_budget


class _BudgetedStream(StreamingResponse):
    """A stream that gives its slot back however it ends (done, client gone, error) — also
    when its body never started, which a ``finally`` inside the generator would miss."""

    def __init__(self, budget: _StreamBudget, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.budget = budget

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.budget.give_back()


async def _doc_events(doc: dict, start: str, samples: bool) -> AsyncIterator[bytes]:
    pts = sorted(doc.get("points", []), key=lambda p: p["index"])
    skip = int(start.removeprefix("store-")) + 1 if start.startswith("store-") else 0
    for i, p in enumerate(pts[skip:], start=skip):
        yield _sse("point", point_view(p, samples=samples), f"store-{i}")
    yield _sse("end", {"status": doc.get("status", "done"), "done": len(pts), "total": len(pts)})


async def _stream_events(client: aioredis.Redis, run_id: str, start: str, samples: bool) -> AsyncIterator[bytes]:
    """XREAD BLOCK on the run's stream; the client's socket timeout outlasts the block.
    ``client`` draws on the app's shared pool (closing it returns the connection)."""
    k = RunKeys(run_id)
    last = "0-0" if start in ("", "-", "0") or start.startswith("store") else start
    try:
        yield b": connected\n\n"
        while True:
            # status before reading: once a terminal status is seen, the stream is complete
            status = await client.hget(k.run, "status")
            # XREAD's reply: [(stream, [(entry id, {field: value})])], decoded
            res = cast("list[tuple[str, list[tuple[str, dict[str, str]]]]]",
                       await client.xread({k.points: last}, count=500, block=1000))
            for _stream, entries in res or []:
                for sid, fields in entries:
                    last = sid
                    yield _sse("point", point_view(json.loads(fields["point"]), samples=samples), sid)
            if status is None:
                yield _sse("end", {"status": "deleted"})
                return
            if status in TERMINAL and not res:
                h = await client.hmget(k.run, ["done", "total", "error"])
                yield _sse(
                    "end",
                    {
                        "status": status,
                        "done": int(h[0] or 0),
                        "total": int(h[1] or 0),
                        "error": h[2],
                    },
                )
                return
            if not res:
                yield b": keep-alive\n\n"
    except redis.RedisError as e:
        logger.warning("SSE for run %s stopped: %s", run_id, e)
        yield _sse("error", {"detail": f"Redis error: {e}"})
    finally:
        await client.aclose()


@router.post(
    "/runs/{run_id}/cancel",
    response_model=RunCancelled,
    responses=responses(404, 409),
    dependencies=[WriteAuth],
)
def cancel_run(run_id: RunId, store: StoreDep, r: RedisDep) -> dict[str, str]:
    """Stop a queued or running run; the points already computed are kept (also on disk)."""
    return {"id": run_id, "status": book.cancel_run(r, run_id, store)}


@router.delete(
    "/runs/{run_id}", status_code=204, responses=responses(404), dependencies=[WriteAuth]
)
def delete_run(run_id: RunId, store: StoreDep, r: RedisDep) -> Response:
    """Delete a run: its Redis state and its stored result document."""
    book.delete_run(r, store, run_id)
    return Response(status_code=204)


@router.get("/runs/{run_id}/export", response_model=None, responses=responses(404, 422))
def export_run(
    run_id: RunId, store: StoreDep, r: RedisDep, format: Literal["json", "csv", "h5"] = "json"
) -> Response:
    """The result document as JSON, one CSV row per point (index, coords..., metrics...), or
    ``h5``: the surface in the HDF5 layout of Li et al.'s loss-landscape scripts
    (``xcoordinates``, ``ycoordinates``, ``train_loss``, ``train_acc`` in percent, every metric
    under its own name; a 1D run in their 1D layout: :mod:`basin.landscape_h5`)."""
    doc = book.result_document(r, store, run_id)
    disposition = {"Content-Disposition": f'attachment; filename="basin-run-{run_id}.{format}"'}
    if format == "h5":
        from basin.landscape_h5 import surface_h5_bytes

        body = surface_h5_bytes({**doc, "id": doc.get("id") or run_id})
        return Response(body, media_type="application/x-hdf5", headers=disposition)
    if format == "csv":
        return PlainTextResponse(book.to_csv(doc), media_type="text/csv", headers=disposition)
    return StrictJSONResponse(doc, headers=disposition)


@router.get("/runs/{run_id}/forgetting", response_model=None, responses=responses(404, 409, 422))
def run_forgetting(
    run_id: RunId, store: StoreDep, r: RedisDep, format: Literal["json", "csv"] = "json"
) -> Response:
    """Per-example forgetting along a 1D classification run kept with ``per_example: true``:
    for each example correct at α = 0, the first α at which it is lost and whether it is
    regained (:func:`basin.analysis.forgetting.forgetting`), with texts and labels from the
    run's dataset. JSON: ``{start, end, rows, histogram: [{alpha, lost}], counts}``; CSV: the rows.
    422 with what to change when the run kept no per-example results or is not 1D."""

    doc = book.result_document(r, store, run_id)
    table = forgetting(doc)  # refuses a run without per-example results before reading files
    dataset = (doc.get("spec") or {}).get("dataset")
    try:
        data_path = store.resolver().dataset(str(dataset))
    except NotFound as e:  # the run exists; its dataset was deleted since
        raise FilesUnavailable(f"the run's dataset is no longer in the store ({e}); the forgetting "
                               "table needs its texts") from None
    table = forgetting(doc, dataset_rows(doc, data_path))
    if format == "csv":
        disposition = {"Content-Disposition": f'attachment; filename="basin-forgetting-{run_id}.csv"'}
        return PlainTextResponse(forgetting_csv(table), media_type="text/csv", headers=disposition)
    return StrictJSONResponse(table)
