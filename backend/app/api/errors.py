"""One mapping from exceptions to HTTP answers, registered by ``create_app``.

The exceptions themselves live in :mod:`service.errors` (and :mod:`basin.errors`); this
module keeps only the mapping.

Routes, uploads and the run bookkeeping raise typed exceptions and let them
propagate; :data:`STATUS` alone decides the status code, and :func:`problem` writes
the one body every such answer has::

    {"detail": "<what went wrong>", "error": "<exception type>", "mismatches": [...]}

``mismatches`` (``[{tensor, reason}]``) only for :class:`~basin.errors.IncompatibleCheckpoints`.
The frontend shows ``detail`` and lists ``mismatches``. Sizes are bounded whatever the input:
``detail`` at :data:`MAX_DETAIL_CHARS`, ``mismatches`` at the first :data:`MAX_MISMATCHES`
(``mismatch_count`` gives the total), each name cut short.

The table is looked up along the exception's MRO, so the most specific entry wins:
a ``CheckpointNotFound`` is a ``NotFound`` (404) before it is a ``CheckpointError``
(422). Whether a missing item is the one the URL addresses (404) or one the request
*carries* (a spec's checkpoint, an upload's ``config=``: invalid input, 422) is
something only the caller knows; it says so with :func:`carried_references`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from basin.errors import BasinError, IncompatibleCheckpoints
from service.errors import (  # the exceptions live in service.errors; re-exported for routes
    Conflict,
    FilesUnavailable,
    InvalidUpload,
    NotFound,
    PayloadTooLarge,
    ServerBusy,
    UnknownReference,
)

#: Exception type → HTTP status. Looked up along the MRO; anything else is a 500.
STATUS: dict[type[Exception], int] = {
    NotFound: 404,  # the run, checkpoint or dataset the URL names (RunNotFound, CheckpointNotFound…)
    Conflict: 409,  # NameTaken, RunConflict (cancel an ended run), FilesUnavailable
    PayloadTooLarge: 413,
    ServerBusy: 503,
    BasinError: 422,  # invalid input: InvalidSpec, CheckpointError, DatasetError,
    # IncompatibleCheckpoints, UnknownReference, InvalidUpload…
    redis.exceptions.ConnectionError: 503,
    redis.exceptions.TimeoutError: 503,
}


#: At most this many ``mismatches`` in an answer (``mismatch_count`` says how many there are).
MAX_MISMATCHES = 50
#: An error's ``detail`` is cut to this many characters.
MAX_DETAIL_CHARS = 4000


def _cut(text: str, limit: int) -> str:
    text = str(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_for(exc: BaseException) -> int | None:
    """The status :data:`STATUS` gives ``exc`` (its most specific entry), or ``None``."""
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return None


def problem(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """``(status, body)`` for an exception in :data:`STATUS`."""
    status = status_for(exc)
    if status is None:
        raise LookupError(f"{type(exc).__name__} has no HTTP status") from exc
    detail = f"Redis is unreachable: {exc}" if isinstance(exc, redis.RedisError) else str(exc)
    body: dict[str, Any] = {"detail": detail, "error": type(exc).__name__}
    if len(detail) > MAX_DETAIL_CHARS:  # a message built from hostile input stays readable
        body["detail"] = detail[: MAX_DETAIL_CHARS - 1] + "…"
    if isinstance(exc, IncompatibleCheckpoints):
        # the first few, each name cut short, and how many there are: a header of 10^5
        # tensors does not become a 15 MB answer
        body["mismatches"] = [
            {"tensor": _cut(n, 200), "reason": _cut(r, 300)}
            for n, r in exc.mismatches[:MAX_MISMATCHES]
        ]
        body["mismatch_count"] = len(exc.mismatches)
    return status, body


#: At most this many errors in a request's 422 (FastAPI's list), each ``input`` cut short.
MAX_VALIDATION_ERRORS = 20


def _short_input(value: Any) -> Any:
    """A client's value as an error may show it: short text, a number, or a short repr."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return _cut(value, 200)
    import reprlib

    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxother = 2, 4, 4, 60, 60
    return _cut(r.repr(value), 200)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 for a body or query its models refuse, in FastAPI's shape (``detail``: a
    list of ``{type, loc, msg, input}``) but bounded: FastAPI echoes each ``input`` whole, so
    a 900 KB ``ref`` came back as a 900 KB error. At most :data:`MAX_VALIDATION_ERRORS`
    errors (``error_count`` gives the total), each input and message cut short."""
    errors = list(exc.errors()) if hasattr(exc, "errors") else []
    shown = [
        {
            "type": str(e.get("type", "")),
            "loc": [x if isinstance(x, int) else _cut(str(x), 100) for x in e.get("loc", ())][:10],
            "msg": _cut(str(e.get("msg", "")), 300),
            "input": _short_input(e.get("input")),
        }
        for e in errors[:MAX_VALIDATION_ERRORS]
    ]
    return JSONResponse(
        status_code=422,
        content={"detail": shown, "error": "RequestValidationError", "error_count": len(errors)},
    )


async def _handle(request: Request, exc: Exception) -> JSONResponse:
    status, body = problem(exc)
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, ServerBusy) else None
    return JSONResponse(status_code=status, content=body, headers=headers)


def install(app: FastAPI) -> None:
    """Answer every exception type of :data:`STATUS` with :func:`problem`."""
    from fastapi.exceptions import RequestValidationError

    for exc_type in STATUS:
        app.add_exception_handler(exc_type, _handle)
    app.add_exception_handler(RequestValidationError, _validation)


@contextlib.contextmanager
def carried_references() -> Iterator[None]:
    """Inside: a store lookup that finds nothing is about a reference the request carries,
    so it is invalid input (:class:`UnknownReference`, 422), not a missing URL (404)."""
    try:
        yield
    except NotFound as e:
        raise UnknownReference(str(e)) from e


# ---- OpenAPI ------------------------------------------------------------------------------


class Mismatch(BaseModel):
    """One tensor two checkpoints disagree on."""

    tensor: str
    reason: str


class ErrorPublic(BaseModel):
    """The body of every error answer of :data:`STATUS`."""

    detail: str = Field(description="what went wrong, for people")
    error: str = Field(description="the exception type, e.g. RunNotFound or InvalidSpec")
    mismatches: list[Mismatch] | None = Field(
        None,
        description=f"only for IncompatibleCheckpoints: the mismatched tensors (the first "
        f"{MAX_MISMATCHES})",
    )
    mismatch_count: int | None = Field(
        None, description="only for IncompatibleCheckpoints: how many tensors mismatch in all"
    )


_WHY = {
    400: "the Host header names a host this server does not answer for (BASIN_ALLOWED_HOSTS)",
    401: "the API token (BASIN_API_TOKEN) is missing or wrong",
    403: "a write without X-Basin-Token or Authorization and with a content type any web "
    "page can send (CSRF guard)",
    404: "no such item",
    409: "the item's state refuses the request",
    413: "the body is over the size cap (BASIN_MAX_JSON_BYTES, uploads BASIN_MAX_UPLOAD_BYTES)",
    422: "invalid input (spec, references, checkpoints, dataset)",
    503: "Redis is unreachable, or every event-stream slot is taken (BASIN_MAX_STREAMS; "
    "Retry-After says when to try again)",
}


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for a route that can answer these error statuses."""
    return {code: {"model": ErrorPublic, "description": _WHY[code]} for code in codes}


__all__ = [
    "STATUS",
    "ErrorPublic",
    "FilesUnavailable",
    "InvalidUpload",
    "PayloadTooLarge",
    "ServerBusy",
    "UnknownReference",
    "carried_references",
    "install",
    "problem",
    "responses",
    "status_for",
]
