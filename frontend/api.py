"""Server-side HTTP client for the dashboard's Python callbacks.

The dashboard talks to the API over HTTP only. Browser code uses same-origin
``fetch``; Python callbacks use this client against one internal address (:func:`base_url`:
``BASIN_API_INTERNAL``, else the server's own bound address — never the request's ``Host``),
and an answer that is not the API's JSON is never echoed into a page.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import flask
import httpx

from basin import results

logger = logging.getLogger(__name__)

TIMEOUT = 30.0


@dataclass
class ApiResult:
    """One API answer: HTTP status and decoded JSON body (``None`` when not JSON)."""

    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def error(self) -> str:
        """A human message for a failed call: ``detail`` plus the mismatched tensors, if any."""
        return error_text(self.status, self.body)


def error_text(status: int, body: Any) -> str:
    """Render an API error body ``{detail, error?, mismatches?}`` as one readable message."""
    if not isinstance(body, dict):  # not the API's error body: never echo what came back
        return f"the API answered HTTP {status} without an error message"
    detail = body.get("detail")
    if isinstance(detail, list):  # FastAPI's own 422 validation list
        detail = "; ".join(
            f"{'.'.join(str(x) for x in d.get('loc', []) if x != 'body')}: {d.get('msg')}" for d in detail
        )
    text = str(detail or f"HTTP {status}")
    mism = body.get("mismatches") or []
    if mism:
        lines = [f"{m.get('tensor')}: {m.get('reason')}" for m in mism[:8]]
        more = f" (+{len(mism) - 8} more)" if len(mism) > 8 else ""
        text += " — mismatched tensors: " + "; ".join(lines) + more
    return text


def base_url() -> str:
    """Where Python callbacks reach the API: one internal address, never the request's ``Host``.

    ``BASIN_API_INTERNAL`` when set (``basin up`` sets it to the address it binds, compose
    to ``http://127.0.0.1:8000``); else the address of the socket that accepted the request
    being served (the ASGI server's own ``server`` address, which no header can change); a
    wildcard bind (``0.0.0.0``, ``::``) is reached on loopback. The ``Host`` header is the
    client's to write: a ``Host`` naming another local port would make this server fetch
    that port for the client."""
    env = os.environ.get("BASIN_API_INTERNAL", "").rstrip("/")
    if env:
        return env
    if flask.has_request_context():
        environ = flask.request.environ
        host, port = str(environ.get("SERVER_NAME") or ""), str(environ.get("SERVER_PORT") or "")
        if host and port.isdigit() and int(port) > 0:
            if host in ("0.0.0.0", "::", ""):
                host = "127.0.0.1"
            return f"http://{f'[{host}]' if ':' in host else host}:{port}"
    return "http://127.0.0.1:8000"


#: What a page shows when the API answers 401 to a listing: the token field is in the navbar.
NEEDS_TOKEN = "This server needs the API token to list {what}: enter it in the API token field above."


def needs_token(result: ApiResult) -> bool:
    """Whether the API refused the call for want of the API token (401)."""
    return result.status == 401


def call(method: str, path: str, *, token: str | None = None, **kw: Any) -> ApiResult:
    """``method path`` against the API; network failures become a 503-like result, not a raise.

    ``X-Basin-Token`` is always sent: the token the user entered, or empty (a server without
    a token only wants the header present on writes, its CSRF guard; one with a token
    answers 401 to listings and writes without it)."""
    headers = dict(kw.pop("headers", {}) or {})
    value = (token or "").strip()
    headers["X-Basin-Token"] = value if value.isascii() else value.encode()  # the API says 401
    try:
        r = httpx.request(method, base_url() + path, headers=headers, timeout=TIMEOUT, **kw)
    except httpx.HTTPError as e:
        logger.warning("API %s %s failed: %s", method, path, e)
        return ApiResult(503, {"detail": f"the API could not be reached: {e}"})
    try:
        body = r.json()
    except ValueError:
        body = r.text
    return ApiResult(r.status_code, body)


def get(path: str, **kw: Any) -> ApiResult:
    return call("GET", path, **kw)


def post(path: str, **kw: Any) -> ApiResult:
    return call("POST", path, **kw)


def all_points(run_id: str, *, samples: bool = False) -> tuple[list[dict], str | None]:
    """Every point of a run so far, as the API's views (``samples`` too when asked): one call,
    the API answers every point after the cursor. Returns ``(points, cursor)``."""
    r = get(f"/api/runs/{run_id}/points" + ("?samples=true" if samples else ""))
    if not r.ok or not isinstance(r.body, dict):
        return [], None
    return list(r.body.get("points") or []), r.body.get("cursor")


def run_document(run_id: str) -> tuple[dict | None, str | None]:
    """A run as a result document (spec, points, anchors, summary) and its status;
    ``(None, None)`` when the API does not have it."""
    r = get(f"/api/runs/{run_id}")
    if not r.ok or not isinstance(r.body, dict):
        return None, None
    points, _ = all_points(run_id)
    return as_document(r.body, points), r.body.get("status")


def as_document(info: dict, points: list[dict]) -> dict:
    """What the figures read, from a run's detail and its points' views: a result document
    built by the one builder (:func:`basin.results.run_document`)."""
    return results.run_document(spec=info.get("spec") or {}, points=points, anchors=info.get("anchors") or [],
                                summary=info.get("summary") or {}, status=info.get("status"))
