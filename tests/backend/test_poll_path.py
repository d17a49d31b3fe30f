"""A viewer's poll (``GET /api/runs/{id}/points``, twice a second per open run page) is
cheap to serve under a crowd (docs/service.md, "Viewers polling"; issue 22).

FastAPI runs each plain-``def`` dependency in its thread pool, one hop per dependency per
request; with a hundred viewers those hops queued behind one another and a poll spent
~150 ms waiting for threads it did nothing in (Server-Timing p50 157 ms for 3 ms of CPU).
The poll's dependencies are coroutines now, so the route's own Redis reads are its only hop.
"""

from __future__ import annotations

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
    calls = list(_calls(route.dependant, app.dependency_overrides))
    assert len(calls) >= 4  # the run id, the settings, the store, Redis
    sync = [
        getattr(c, "__qualname__", repr(c)) for c in calls if not inspect.iscoroutinefunction(c)
    ]
    assert sync == [], f"run in the thread pool on every poll: {sync}"


def test_every_answer_says_the_servers_own_time_for_it(client):
    r = client.get("/api/runs/not-a-run-id!/points")
    assert r.status_code == 404
    assert re.fullmatch(r"app;dur=\d+\.\d\d", r.headers["server-timing"]), r.headers
    assert re.fullmatch(r"app;dur=\d+\.\d\d", client.get("/api/meta").headers["server-timing"])
