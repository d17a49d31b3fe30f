"""Locust file of :mod:`tests.reliability.test_poll_load`: run pages polling one run's points.

Run by that test as its own process (``python -m locust -f <this file> --headless ...``), so
gevent's monkey-patching never touches pytest's process. Each simulated viewer is a
:class:`locust.FastHttpUser` (geventhttpclient: a fraction of a millisecond of client CPU a
request) paced at one request every ``POLL_S`` seconds (``constant_pacing``), as the run
page polls: its first request asks for every point so far, each next one for the points
after the previous answer's cursor. After ``BASIN_LOAD_POLLS`` polls a viewer stops, and
once every viewer has stopped the process quits, writing what it saw to
``BASIN_LOAD_OUT`` (JSON):

- ``lat_ms``: each request's time as the client saw it (send to last byte);
- ``server_ms``: the app's own time for it (its ``Server-Timing: app;dur=`` header);
- ``first``: ``[bytes, points]`` of each viewer's first page; ``sizes``: each poll's bytes;
- ``errors``: status codes or exception names, counted;
- ``span_s``: when the first and the last request ended (monotonic seconds);
- ``cpu_s``: this process's CPU time from the test's start (the load generator's share);
- ``cpu_warning``: whether locust warned that it ran short of CPU.

Configuration through the environment: ``BASIN_LOAD_RUN`` (run id), ``BASIN_LOAD_POLLS``,
``BASIN_LOAD_USERS``, ``BASIN_LOAD_OUT``, ``BASIN_LOAD_POLL_S`` (default 0.5),
``BASIN_LOAD_IN_PHASE`` (``1``: every viewer polls at the same moment).
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import time
from collections import Counter

import gevent
from locust import FastHttpUser, constant_pacing, events, task
from locust.exception import StopUser

RUN = os.environ.get("BASIN_LOAD_RUN", "")
POLLS = int(os.environ.get("BASIN_LOAD_POLLS", "10"))
USERS = int(os.environ.get("BASIN_LOAD_USERS", "100"))
OUT = os.environ.get("BASIN_LOAD_OUT", "locust-viewers.json")
POLL_S = float(os.environ.get("BASIN_LOAD_POLL_S", "0.5"))
IN_PHASE = os.environ.get("BASIN_LOAD_IN_PHASE", "") == "1"
DUR = re.compile(r"\bapp;dur=([0-9.]+)")
_offsets = random.Random(901)  # the viewers' start offsets, the same every run

seen: dict = {
    "lat_ms": [],
    "server_ms": [],
    "first": [],
    "sizes": [],
    "errors": Counter(),
    "stopped": 0,
    "span_s": [None, None],  # when the first request ended, when the last one ended
}


@events.request.add_listener
def _on_request(name, response_time, response, exception, **_kw):
    if exception is not None:
        status = getattr(response, "status_code", None)
        seen["errors"][str(status) if status else type(exception).__name__] += 1
        return
    seen["lat_ms"].append(response_time)
    now = time.monotonic()
    span = seen["span_s"]
    span[0] = now if span[0] is None else span[0]
    span[1] = now
    m = DUR.search(response.headers.get("server-timing") or "")
    if m:
        seen["server_ms"].append(float(m.group(1)))


def _cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@events.test_start.add_listener
def _started(**_kw):
    seen["cpu_at_start"] = _cpu_s()  # locust's own start-up (imports) is not the viewers' cost


@events.quitting.add_listener
def _write(environment, **_kw):
    out = {
        **seen,
        "errors": dict(seen["errors"]),
        "cpu_s": _cpu_s() - seen.get("cpu_at_start", 0.0),
        "cpu_warning": bool(getattr(environment.runner, "cpu_warning_emitted", False)),
    }
    with open(OUT, "w") as f:
        json.dump(out, f)


class Viewer(FastHttpUser):
    """One run page: every point so far, then ``POLLS`` polls for what is new."""

    wait_time = constant_pacing(POLL_S)
    network_timeout = 120.0
    connection_timeout = 120.0

    def on_start(self) -> None:
        self.after: str | None = None
        self.asked = 0
        # Viewers open their pages at independent moments: each starts at its own offset
        # within one poll period (locust starts them all at once, and in phase 100 viewers
        # would poll in one burst every 500 ms, which no crowd of people does).
        # BASIN_LOAD_IN_PHASE=1 keeps that burst (the worst case).
        if not IN_PHASE:
            gevent.sleep(_offsets.uniform(0, POLL_S))

    @task
    def poll(self) -> None:
        if self.asked > POLLS:
            raise StopUser()
        first = self.asked == 0
        self.asked += 1
        path = f"/api/runs/{RUN}/points"
        if self.after:
            path += f"?after={self.after}"
        with self.client.get(
            path, name="first page" if first else "poll", catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                return
            body = json.loads(r.content)
            if first:
                seen["first"].append([len(r.content), len(body["points"])])
            else:
                seen["sizes"].append(len(r.content))
            self.after = body["cursor"]

    def on_stop(self) -> None:
        seen["stopped"] += 1
        if seen["stopped"] >= USERS:  # every viewer is done: end the test now
            gevent.spawn_later(0.1, self.environment.runner.quit)
