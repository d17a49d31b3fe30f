"""Anti-framing headers on every response (API, dashboard and the guard's own refusals).

Pages of a Basin server hold one-click buttons that send the stored API token; a page
that frames them could trick a click (clickjacking). Every response therefore carries
``X-Frame-Options: DENY`` and a ``Content-Security-Policy`` with ``frame-ancestors 'none'``
(appended to a policy a response already has).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

FRAME_ANCESTORS = b"frame-ancestors 'none'"


class AntiFramingMiddleware:
    """Pure ASGI middleware: adds the two headers to every HTTP response start."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_framed(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = with_anti_framing(list(message.get("headers") or []))
            await send(message)

        await self.app(scope, receive, send_framed)


def with_anti_framing(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` with ``X-Frame-Options: DENY`` and ``frame-ancestors 'none'`` in the CSP."""
    out: list[tuple[bytes, bytes]] = []
    csp_seen = False
    for k, v in headers:
        name = k.lower()
        if name == b"x-frame-options":
            continue
        if name == b"content-security-policy":
            csp_seen = True
            if b"frame-ancestors" not in v:
                v = v.rstrip(b"; ") + b"; " + FRAME_ANCESTORS
        out.append((k, v))
    out.append((b"x-frame-options", b"DENY"))
    if not csp_seen:
        out.append((b"content-security-policy", FRAME_ANCESTORS))
    return out


__all__ = ["AntiFramingMiddleware", "with_anti_framing"]
