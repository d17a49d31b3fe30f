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
    """Writes need ``BASIN_API_TOKEN`` when one is configured (``Authorization: Bearer`` or ``X-Basin-Token``)."""
    if not settings.api_token:
        return
    given = x_basin_token or (authorization or "").removeprefix("Bearer ").strip()
    if not given or not secrets.compare_digest(given, settings.api_token):
        raise HTTPException(status_code=401, detail="this server requires an API token for writes")


WriteAuth = Depends(require_token)
