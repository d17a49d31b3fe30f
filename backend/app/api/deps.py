"""FastAPI dependencies, as ``Annotated`` aliases: ``SettingsDep``, ``StoreDep``, ``RedisDep``, ``WriteAuth``."""

from __future__ import annotations

import secrets
from typing import Annotated

import redis
from fastapi import Depends, Header, HTTPException, Request

from service.settings import Settings, get_settings
from service.store import Store

SettingsDep = Annotated[Settings, Depends(get_settings)]


# The dependencies below do no I/O worth a thread, so they are ``async def``: FastAPI runs
# a plain ``def`` dependency in its thread pool, one hop per dependency per request, and
# under a crowd of polling viewers those hops queue behind one another (docs/service.md,
# "Viewers polling"). Only the route itself (the Redis reads) takes a thread.


async def get_store(settings: SettingsDep) -> Store:
    return Store(settings.store)


StoreDep = Annotated[Store, Depends(get_store)]


async def get_redis(request: Request) -> redis.Redis:
    """The app's shared client (created in ``create_app``; decode_responses=True)."""
    return request.app.state.redis


RedisDep = Annotated[redis.Redis, Depends(get_redis)]


def token_presented(settings: Settings, authorization: str | None, x_basin_token: str | None) -> bool:
    """Whether the request carries this server's ``BASIN_API_TOKEN`` (False when none is set)."""
    if not settings.api_token:
        return False
    given = (x_basin_token or "").strip()
    if not given:
        scheme, _, value = (authorization or "").strip().partition(" ")
        given = value.strip() if scheme.lower() == "bearer" else ""
    try:
        return bool(given) and secrets.compare_digest(given.encode("ascii"), settings.api_token.encode("utf-8"))
    except UnicodeEncodeError:
        return False


def may_list(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    x_basin_token: Annotated[str | None, Header()] = None,
) -> bool:
    """Whether this request may see what a listing shows (other runs' and fits' ids): no
    token is configured (the server is open: ``GET /api/runs`` is too), or the request
    carries it. Open routes (a run's own, health) answer less without it: see
    ``docs/service.md``, "What a link reveals"."""
    return not settings.api_token or token_presented(settings, authorization, x_basin_token)


#: ``True`` when the request may see other jobs' ids (:func:`may_list`).
MayList = Annotated[bool, Depends(may_list)]


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
