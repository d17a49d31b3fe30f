"""``Server-Timing: app;dur=<ms>`` on every HTTP response: the server's own time for it.

From the moment the request reaches the app (uvicorn has parsed its head) to the moment the
response starts (for ``/points``: the handler has built the whole body), in milliseconds.
A client's latency minus this is the network, the event loop's queue and the body's
transfer: the load test (``tests/reliability/test_poll_load.py``) reports both, and a
browser's developer tools show it beside each request.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ServerTimingMiddleware:
    """Pure ASGI middleware: adds ``Server-Timing: app;dur=…`` to each HTTP response start."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                ms = (time.perf_counter() - t0) * 1000
                message = dict(message)
                message["headers"] = [
                    *(message.get("headers") or []),
                    (b"server-timing", f"app;dur={ms:.2f}".encode()),
                ]
            await send(message)

        await self.app(scope, receive, send_timed)


__all__ = ["ServerTimingMiddleware"]
