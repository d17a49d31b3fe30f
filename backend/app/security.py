"""The request guard: one pure ASGI middleware in front of the whole app (API and dashboard).

It decides from the request line and headers alone, before any body is read (a FastAPI
dependency would run after FastAPI has read and parsed the body):

1. **Host allow-list** (every request): the ``Host`` header must name a host of
   :meth:`Settings.host_allow_list` (loopback, the host of ``BASIN_PUBLIC_URL``,
   ``BASIN_ALLOWED_HOSTS``), else 400. A page served from an attacker's domain that
   re-binds its DNS name to this server sends its own domain as ``Host``: refused.
2. **API token** (``BASIN_API_TOKEN`` set): every write under ``/api`` (POST, PUT,
   PATCH, DELETE, ``/api/runs/validate`` included) and the listings and downloads
   (``GET /api/runs``, ``GET /api/fits``, ``/api/checkpoints…``, ``/api/datasets…``) need it, as
   ``X-Basin-Token: <token>`` or ``Authorization: Bearer <token>`` (401 otherwise,
   compared in constant time). A run's own routes (``/api/runs/{id}…``) and a fit's
   (``/api/fits/{id}``) stay open: the 128-bit share link is the capability.
3. **CSRF guard** (no token set): a write under ``/api`` must carry one of those headers
   (any value) or a content type a plain HTML form cannot send; otherwise 403. Cross-site
   pages can send "simple" requests (form posts, ``text/plain``, no body) to a server on
   127.0.0.1 without asking; custom headers and JSON need a CORS preflight, which this
   server never grants (it sends no CORS headers at all).
4. **JSON body cap**: a write under ``/api`` other than the uploads (PUT/POST
   ``/api/checkpoints`` and ``/api/datasets``, capped by ``BASIN_MAX_UPLOAD_BYTES`` where
   they are received) is read here, counting bytes: a ``Content-Length`` over
   ``BASIN_MAX_JSON_BYTES`` is refused (413) without reading, a chunked body is cut at the
   cap (413); the body read is handed to the app.
"""

from __future__ import annotations

import json
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.settings import Settings

UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Content types an HTML form (or a ``fetch`` without preflight) can send cross-site.
SIMPLE_TYPES = frozenset(
    {"", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)
#: Routes whose bodies are uploads (their own, larger cap applies where they are read).
UPLOAD_PATHS = frozenset({"/api/checkpoints", "/api/datasets"})
#: GET routes that need the token when one is set: listings and downloads.
_PROTECTED_READ = re.compile(r"^/api/(?:runs/?|fits/?|(?:checkpoints|datasets)(?:/.*)?)$")

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
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not (path == "/api" or path.startswith("/api/")):
            await self.app(scope, receive, send)
            return
        method = scope.get("method", "GET").upper()
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
        if unsafe and path not in UPLOAD_PATHS:
            try:
                receive = await self._read_capped(headers, receive)
            except _TooLarge:
                await _answer(
                    send,
                    413,
                    "PayloadTooLarge",
                    f"the request body is over this server's limit of {self.max_json} bytes "
                    "for JSON (BASIN_MAX_JSON_BYTES)",
                )
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

    async def _read_capped(self, headers: dict[str, str], receive: Receive) -> Receive:
        """Read the whole body (at most ``max_json`` bytes) and return a ``receive`` that
        replays it, then passes on what follows (``http.disconnect``)."""
        length = headers.get("content-length")
        if length is not None:
            try:
                if int(length) > self.max_json:
                    raise _TooLarge
            except ValueError:
                pass  # the server rejects a malformed Content-Length before we run
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                pending: list[Message] = [message]
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_json:
                raise _TooLarge
            chunks.append(body)
            if not message.get("more_body", False):
                pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
                break

        async def replay() -> Message:
            if pending:
                return pending.pop(0)
            return await receive()

        return replay


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
