"""The request guard: one pure ASGI middleware in front of the whole app (API and dashboard).

Checks 1–3 and the length checks of 4 are decided from the request line and headers alone,
before any body is read (a FastAPI dependency would run after FastAPI has read and parsed
the body); then the body is read under its cap and, when JSON, checked (4–5) before any
route sees it:

1. **Host allow-list** (every request): the ``Host`` header must name a host of
   :meth:`Settings.host_allow_list` (loopback, the host of ``BASIN_PUBLIC_URL``,
   ``BASIN_ALLOWED_HOSTS``), else 400. A page served from an attacker's domain that
   re-binds its DNS name to this server sends its own domain as ``Host``: refused.
2. **API token** (``BASIN_API_TOKEN`` set): every write under ``/api`` (POST, PUT,
   PATCH, DELETE, ``/api/runs/validate`` included) and the listings and downloads
   (``GET /api/runs``, ``GET /api/fits``, ``GET /api/subspaces``, ``GET /api/tunes``,
   ``/api/checkpoints…``, ``/api/datasets…``, ``/api/artefacts``) need it, as
   ``X-Basin-Token: <token>`` or ``Authorization: Bearer <token>`` (401 otherwise,
   compared in constant time). A run's own routes (``/api/runs/{id}…``), a fit's
   (``/api/fits/{id}``) and a tune job's (``/api/tunes/{id}``) stay open: the 128-bit share link is the capability.
3. **CSRF guard** (no token set): a write under ``/api`` must carry one of those headers
   (any value) or a content type a plain HTML form cannot send; otherwise 403. Cross-site
   pages can send "simple" requests (form posts, ``text/plain``, no body) to a server on
   127.0.0.1 without asking; custom headers and JSON need a CORS preflight, which this
   server never grants (it sends no CORS headers at all).
4. **One body cap, every route** (API, dashboard, anything mounted later): a body is read
   here, counting bytes, up to ``BASIN_MAX_JSON_BYTES`` — a ``Content-Length`` over the cap
   is refused (413) without reading, a chunked body is cut at the cap (413) — and the body
   read is handed to the app. Explicit exceptions: the dashboard's callbacks
   (``/_dash-…``, ``BASIN_MAX_DASHBOARD_BODY_BYTES``: a run page sends its points back as
   state) and the uploads (PUT/POST ``/api/checkpoints`` and ``/api/datasets``: a
   ``Content-Length`` over ``BASIN_MAX_UPLOAD_BYTES`` is 413 here; the route streams the
   body to disk under that cap). A request without a body (a GET with neither
   ``Content-Length`` nor ``Transfer-Encoding``) is passed on at once.
5. **Strict JSON**: a body that is JSON (it starts with ``{`` or ``[`` once decoded the way
   the routes' ``json.loads`` decodes bytes: UTF-8 with or without a byte-order mark,
   UTF-16/32) is parsed by
   :func:`basin.strict_json.loads`: NaN, ±Infinity, a number that overflows (``1e999``) or
   nesting deeper than :data:`basin.strict_json.MAX_DEPTH` is 422 ``InvalidJson``, for
   every route (specs, tags, fits, the dashboard's callbacks). A body that is not JSON
   is left to the route.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from basin import strict_json
from service.settings import Settings

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Content types an HTML form (or a ``fetch`` without preflight) can send cross-site.
SIMPLE_TYPES = frozenset(
    {"", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)
#: Routes whose bodies are uploads (their own, larger cap applies where they are read).
UPLOAD_PATHS = frozenset({"/api/checkpoints", "/api/datasets"})
#: The dashboard's callback routes (``/_dash-update-component``…): their own cap.
DASHBOARD_PREFIX = "/_dash-"
#: GET routes that need the token when one is set: listings and downloads.
_PROTECTED_READ = re.compile(r"^/api/(?:runs/?|fits/?|subspaces/?|tunes/?|studies/?|(?:checkpoints|datasets|artefacts)(?:/.*)?)$")

TOKEN_HEADERS = "X-Basin-Token: <token> or Authorization: Bearer <token>"
MSG_NEEDS_TOKEN = (
    "this server needs its API token (BASIN_API_TOKEN) for this request: "
    f"send {TOKEN_HEADERS}"
)
MSG_WRONG_TOKEN = f"the API token is wrong: send this server's BASIN_API_TOKEN as {TOKEN_HEADERS}"
MSG_CSRF = (
    "writes need an X-Basin-Token header (any value when the server has no token; "
    "Authorization works too) or a JSON body (Content-Type: application/json): "
    "a request any web page could send is refused"
)

_HOST_RE = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[^:\[\]/@\s]*)(?::(?P<port>\d{1,5}))?$")


def host_of(header: str | None) -> str | None:
    """The host of a ``Host`` header, lower case without the port (``[::1]`` keeps its
    brackets); ``None`` for a malformed header."""
    if not header:
        return None
    m = _HOST_RE.match(header.strip())
    return m["host"].lower() if m and m["host"] else None


class _TooLarge(Exception):
    pass


class SecurityMiddleware:
    """See the module docstring. ``settings`` are read once, when the app is built."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.token = settings.api_token or None
        self.max_json = settings.max_json_bytes
        self.max_upload = settings.max_upload_bytes
        self.max_dashboard = settings.max_dashboard_body_bytes
        hosts = settings.host_allow_list()
        self.any_host = hosts == ["*"]
        self.hosts = frozenset(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        if not self.any_host:
            host = host_of(headers.get("host"))
            if host is None or host not in self.hosts:
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                shown = headers.get("host") or ""
                await _answer(
                    send,
                    400,
                    "HostNotAllowed",
                    f"this server does not answer for host {shown[:100]!r}: add the host to "
                    "BASIN_ALLOWED_HOSTS (comma-separated) or set BASIN_PUBLIC_URL to the "
                    "address users open",
                )
                return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        method = scope.get("method", "GET").upper()
        if not (path == "/api" or path.startswith("/api/")):
            # the dashboard (``/_dash-update-component``…) and every other route: capped too
            await self._capped(scope, receive, send, headers)
            return
        unsafe = method in UNSAFE
        if self.token is not None and (unsafe or _PROTECTED_READ.match(path)):
            refusal = self._check_token(headers)
            if refusal:
                await _answer(send, 401, "TokenRequired", refusal, auth=True)
                return
        elif self.token is None and unsafe:
            has_header = "x-basin-token" in headers or "authorization" in headers
            ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if not has_header and ctype in SIMPLE_TYPES:
                await _answer(send, 403, "CsrfRefused", MSG_CSRF)
                return
        await self._capped(scope, receive, send, headers)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        """Hand the request on with its body capped: an upload route's ``Content-Length`` checked
        against ``BASIN_MAX_UPLOAD_BYTES`` (the route streams it to disk under that cap), any
        other body read here under ``BASIN_MAX_JSON_BYTES`` and, when it is JSON, parsed
        strictly (no NaN/Infinity, bounded nesting: 422)."""
        method = scope.get("method", "GET").upper()
        if scope.get("path", "") in UPLOAD_PATHS and method in ("PUT", "POST"):
            if _declared(headers) > self.max_upload:
                await _answer(
                    send,
                    413,
                    "PayloadTooLarge",
                    f"upload too large: the limit is {self.max_upload} bytes (BASIN_MAX_UPLOAD_BYTES)",
                )
                return
            await self.app(scope, receive, send)
            return
        if method in ("GET", "HEAD", "OPTIONS") and _declared(headers) <= 0 and (
            "transfer-encoding" not in headers
        ):
            await self.app(scope, receive, send)  # no body: nothing to read first
            return
        dashboard = scope.get("path", "").startswith(DASHBOARD_PREFIX)
        cap, setting = (
            (self.max_dashboard, "BASIN_MAX_DASHBOARD_BODY_BYTES")
            if dashboard
            else (self.max_json, "BASIN_MAX_JSON_BYTES")
        )
        try:
            receive, body = await self._read_capped(headers, receive, cap)
        except _TooLarge:
            await _answer(
                send,
                413,
                "PayloadTooLarge",
                f"the request body is over this server's limit of {cap} bytes for this route "
                f"({setting}; uploads to /api/checkpoints and /api/datasets: "
                "BASIN_MAX_UPLOAD_BYTES)",
            )
            return
        if len(body) > 64 * 1024:  # a big body is parsed off the event loop
            refusal = await asyncio.to_thread(_strict_json_refusal, body)
        else:
            refusal = _strict_json_refusal(body)
        if refusal is not None:
            await _answer(send, 422, "InvalidJson", refusal)
            return
        await self.app(scope, receive, send)

    def _check_token(self, headers: dict[str, str]) -> str | None:
        """``None`` when the request carries the token, else why not (the 401's detail)."""
        assert self.token is not None
        given = headers.get("x-basin-token", "").strip()
        if not given:
            auth = headers.get("authorization", "").strip()
            scheme, _, value = auth.partition(" ")
            given = value.strip() if scheme.lower() == "bearer" else ""
        if not given:
            return MSG_NEEDS_TOKEN
        try:
            ok = secrets.compare_digest(given.encode("ascii"), self.token.encode("utf-8"))
        except UnicodeEncodeError:  # a header decoded as latin-1 with non-ASCII bytes
            ok = False
        return None if ok else MSG_WRONG_TOKEN

    async def _read_capped(
        self, headers: dict[str, str], receive: Receive, cap: int
    ) -> tuple[Receive, bytes]:
        """Read the whole body (at most ``cap`` bytes) and return a ``receive`` that replays
        it, then passes on what follows (``http.disconnect``), and the body."""
        if _declared(headers) > cap:
            raise _TooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                pending: list[Message] = [message]
                break
            body = message.get("body", b"")
            size += len(body)
            if size > cap:
                raise _TooLarge
            chunks.append(body)
            if not message.get("more_body", False):
                pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
                break

        whole = pending[0].get("body", b"") if pending[0]["type"] == "http.request" else b""

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        return replay, whole


def _declared(headers: dict[str, str]) -> int:
    """The ``Content-Length`` a request declares (-1: none, or one the server refuses itself)."""
    try:
        return int(headers.get("content-length", "-1"))
    except ValueError:
        return -1


def _strict_json_refusal(body: bytes) -> str | None:
    """Why a JSON body is refused (a NaN or an infinite number, nesting too deep), else ``None``;
    a body that is not JSON is for the route to judge (its own 4xx).

    "JSON" is judged the way the routes' parser reads bytes (``json.loads``: UTF-8 with or
    without a byte-order mark, UTF-16 and UTF-32 told by their zero bytes): a body that only
    *starts* with something else — ``\\xef\\xbb\\xbf{…`` or ``\\x00[\\x00[…`` — is the same JSON
    to the route, so it is checked the same here."""
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")
    except (UnicodeDecodeError, LookupError):
        return None  # not text: the route says so in its own words
    if text.lstrip(" \t\r\n")[:1] not in ("{", "["):
        return None
    try:
        strict_json.loads(text)
    except strict_json.JsonRefused as e:
        return f"the JSON body is refused: {e}"
    except ValueError:  # not JSON: the route says so in its own words
        return None
    return None


def _headers(scope: Scope) -> dict[str, str]:
    """Request headers (latin-1 decoded, names lower case; the first of repeated names)."""
    out: dict[str, str] = {}
    for k, v in scope.get("headers") or []:
        out.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
    return out


async def _answer(send: Send, status: int, error: str, detail: str, *, auth: bool = False) -> None:
    body = json.dumps({"detail": detail, "error": error}).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if auth:
        headers.append((b"www-authenticate", b'Bearer realm="basin"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["SecurityMiddleware", "host_of"]
