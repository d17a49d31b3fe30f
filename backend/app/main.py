"""The FastAPI application: the API under ``/api`` and the Dash dashboard on the same origin."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import cast

import redis
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp

from backend.app.api import errors
from backend.app.api.responses import StrictJSONResponse
from backend.app.api.routes import (
    checkpoints,
    datasets,
    fits,
    health,
    hub,
    meta,
    runs,
    studies,
    subspaces,
    tunes,
)
from backend.app.framing import AntiFramingMiddleware
from backend.app.security import SecurityMiddleware
from backend.app.timing import ServerTimingMiddleware
from service.runstate.reads import heartbeat_ttl
from service.runstate.reaper import Reaper
from service.settings import Settings, get_settings
from service.store import Store
from service.tasks import send_drain, send_task

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, with_ui: bool = True) -> FastAPI:
    """Build the app. ``settings`` overrides the environment (tests pass their own)."""
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Everything built so far (torch, transformers, the app: ~230,000 objects) lives as
        # long as the process: out of the collector's sight, a full collection no longer
        # walks it (~200 ms with the GIL held: every request in flight waited for it).
        gc.freeze()
        reaper = None
        if settings.reap_seconds > 0:
            reaper = Reaper(
                app.state.redis,
                Store(settings.store),
                lambda run_id: send_drain(settings.redis_url, settings.task_queue, run_id),
                interval=settings.reap_seconds,
                grace_s=settings.lost_task_grace_seconds,
                point_limit_s=settings.point_time_limit_s,
                finished_ttl_s=settings.finished_run_ttl_s,
                # a fit's worker is dead once its heartbeat has expired and the grace passed
                fit_grace_s=heartbeat_ttl(settings.lease_seconds) + settings.lost_task_grace_seconds,
                send_job=lambda name, args: send_task(settings.redis_url, settings.task_queue, name, args),
            ).start()
        try:
            yield
        finally:
            if reaper is not None:
                reaper.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="Basin",
        description="Loss landscapes and mode connectivity of fine-tuned language models.",
        version="0.1.0",
        docs_url="/docs",
        openapi_url="/api/openapi.json",
        # strict JSON out: a diverged point's inf/nan metric is null, never a 500
        default_response_class=StrictJSONResponse,
    )

    async def _settings() -> Settings:  # async: no thread-pool hop per request (deps.py)
        return settings

    app.dependency_overrides[get_settings] = _settings
    app.state.settings = settings
    app.state.redis = redis.Redis.from_url(settings.redis_url, decode_responses=True, socket_timeout=30)
    settings.store.mkdir(parents=True, exist_ok=True)

    errors.install(app)

    for module in (health, meta, hub, checkpoints, datasets, runs, fits, subspaces, tunes, studies):
        app.include_router(module.router, prefix="/api")

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def _api_not_found(rest: str) -> JSONResponse:
        return JSONResponse(status_code=404, content={"detail": f"no such API route: /api/{rest}"})

    # Host allow-list, API token, CSRF guard and JSON cap: before any route reads a body,
    # for the API and the dashboard alike.
    app.add_middleware(SecurityMiddleware, settings=settings)
    # Outermost: every response, the guard's refusals included, says it may not be framed.
    app.add_middleware(AntiFramingMiddleware)
    # Outermost of all: the server's own time for each response (Server-Timing: app;dur=).
    app.add_middleware(ServerTimingMiddleware)

    if with_ui:
        try:
            from a2wsgi import WSGIMiddleware

            from frontend.app import create_dash_app
        except ImportError as e:  # the dashboard is optional for API-only deployments
            logger.warning("dashboard not mounted: %s", e)
        else:
            dash_app = create_dash_app()
            # a2wsgi types its ASGI callable with its own (narrower) scope/event types
            app.mount("/", cast(ASGIApp, WSGIMiddleware(dash_app.server)))
    return app
