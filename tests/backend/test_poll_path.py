"""A viewer's poll (``GET /api/runs/{id}/points``, twice a second per open run page) is
cheap to serve under a crowd (docs/service.md, "Viewers polling"; issue 22).

FastAPI runs each plain-``def`` dependency in its thread pool, one hop per dependency per
request; with a hundred viewers those hops queued behind one another and a poll spent
~150 ms waiting for threads it did nothing in (Server-Timing p50 157 ms for 3 ms of CPU).
The poll's dependencies are coroutines now, and its Redis reads go through an asyncio
client (no thread: not 40 fighting for the GIL); the objects the server starts with are frozen out of
the garbage collector's full passes (~200 ms each with torch imported).
"""

from __future__ import annotations

import gc
import inspect
import re

from fastapi.routing import APIRoute


def _calls(dependant, overrides):
    for dep in dependant.dependencies:
        call = overrides.get(dep.call, dep.call)
        yield call
        yield from _calls(dep, overrides)


def test_a_poll_takes_no_thread_hop_for_its_dependencies(make_client):
    from backend.app.api.routes.runs import router

    app = make_client().app
    route = next(
        r for r in router.routes if isinstance(r, APIRoute) and r.path == "/runs/{run_id}/points"
    )
    assert inspect.iscoroutinefunction(route.dependant.call)  # asyncio Redis: not in 40 threads
    calls = list(_calls(route.dependant, app.dependency_overrides))
    assert len(calls) >= 3  # the run id, the store, the settings
    sync = [
        getattr(c, "__qualname__", repr(c)) for c in calls if not inspect.iscoroutinefunction(c)
    ]
    assert sync == [], f"run in the thread pool on every poll: {sync}"


def test_every_answer_says_the_servers_own_time_for_it(client):
    r = client.get("/api/runs/not-a-run-id!/points")
    assert r.status_code == 404
    assert re.fullmatch(r"app;dur=\d+\.\d\d", r.headers["server-timing"]), r.headers
    assert re.fullmatch(r"app;dur=\d+\.\d\d", client.get("/api/meta").headers["server-timing"])


def test_the_objects_the_server_starts_with_are_frozen_out_of_full_collections(make_client):
    gc.unfreeze()  # (another test's app may have frozen this process already)
    assert gc.get_freeze_count() == 0
    with make_client() as client:  # runs the lifespan, as uvicorn does at start
        assert client.get("/api/meta").status_code == 200
        assert gc.get_freeze_count() > 100_000  # torch, transformers, the app


def test_the_server_parses_http_in_c_on_libuvs_loop():
    """uvicorn's ``auto`` choices (how ``basin up`` and the tests' stack start it) find
    httptools and uvloop, both in the service extra: h11's pure-Python parser and asyncio's
    loop cost a poll more CPU than the poll's own work."""
    from uvicorn.config import Config
    from uvicorn.loops.auto import auto_loop_factory
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    config = Config("backend.app.main:create_app", factory=True)
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    assert auto_loop_factory(use_subprocess=False).__module__.startswith("uvloop")
