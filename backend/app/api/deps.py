"""FastAPI dependencies, as ``Annotated`` aliases: ``SettingsDep``, ``StoreDep``, ``RedisDep``, ``WriteAuth``."""

from __future__ import annotations

import secrets
from typing import Annotated

import redis
from fastapi import Depends, Header, HTTPException, Request

from service.settings import Settings, get_settings
from service.store import Store

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_store(settings: SettingsDep) -> Store:
    return Store(settings.store)


StoreDep = Annotated[Store, Depends(get_store)]


def get_redis(request: Request) -> redis.Redis:
    """The app's shared client (created in ``create_app``; decode_responses=True)."""
    return request.app.state.redis


RedisDep = Annotated[redis.Redis, Depends(get_redis)]


def require_token(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    x_basin_token: Annotated[str | None, Header()] = None,
) -> None:
    """Writes need ``BASIN_API_TOKEN`` when one is configured (``Authorization: Bearer`` or
    ``X-Basin-Token``).

    The app's :class:`~backend.app.security.SecurityMiddleware` already refuses such
    requests before their body is read; this second check documents the headers in the
    OpenAPI schema and guards an app built without the middleware.
    """
    if not settings.api_token:
        return
    given = (x_basin_token or "").strip()
    if not given:
        scheme, _, value = (authorization or "").strip().partition(" ")
        given = value.strip() if scheme.lower() == "bearer" else ""
    try:
        ok = bool(given) and secrets.compare_digest(
            given.encode("ascii"), settings.api_token.encode("utf-8")
        )
    except UnicodeEncodeError:
        ok = False
    if not ok:
        raise HTTPException(status_code=401, detail="this server requires an API token for writes")


WriteAuth = Depends(require_token)
