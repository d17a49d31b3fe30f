"""Viewers polling points while runs go: 0 errors, every viewer sees every point of its
run exactly once; the API's p50/p95 latency goes to the figures.

Plain asyncio + httpx: each viewer is what an open run page does — poll
``/api/runs/{id}/points?after=<cursor>`` (and now and then the run itself) until the
run has ended and it has every point. The run ends are the events the viewers wait for.
The runs are held inside a point (the worker hook) until every viewer has polled a few
times, so the load falls while the runs go, however fast the machine is.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.reliability.conftest import count, ensure_worker, linear_spec, percentile

POINTS = 21
POLL_S = 0.5  # how often a run page asks


async def viewer(
    client: httpx.AsyncClient,
    run_id: str,
    lat: list[float],
    errors: Counter,
    seen_by: list[list[int]],
    polled: list[int],
    me: int,
) -> None:
    seen: list[int] = []
    after: str | None = None
    polls = 0
    while True:
        polls += 1
        polled[me] = polls
        path = f"/api/runs/{run_id}" if polls % 5 == 0 else f"/api/runs/{run_id}/points"
        params = {"after": after} if after and "points" in path else {}
        t0 = time.perf_counter()
        try:
            r = await client.get(path, params=params)
        except httpx.HTTPError as e:
            errors[type(e).__name__] += 1
            await asyncio.sleep(POLL_S)
            continue
        lat.append(time.perf_counter() - t0)
        if r.status_code != 200:
            errors[str(r.status_code)] += 1
            await asyncio.sleep(POLL_S)
            continue
        if "points" in path:
            body = r.json()
            if body.get("reset"):
                seen = []
            seen += [p["index"] for p in body["points"]]
            after = body["cursor"]
            if body["status"] in ("done", "failed", "cancelled") and not body["points"]:
                seen_by.append(seen)
                return
        await asyncio.sleep(POLL_S)


async def release_after(seam, run_ids: list[str], polled: list[int], polls: int) -> None:
    """Let the held runs go once every viewer has polled ``polls`` times."""
    while min(polled) < polls:
        await asyncio.sleep(0.05)
    for run_id in run_ids:
        seam.release(run_id)


async def crowd(base_url: str, seam, run_ids: list[str], n: int, polls: int):
    lat: list[float] = []
    errors: Counter = Counter()
    seen_by: list[list[int]] = []
    polled = [0] * n
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=base_url, timeout=60, limits=limits) as client:
        await asyncio.gather(
            release_after(seam, run_ids, polled, polls),
            *(
                viewer(client, run_ids[i % len(run_ids)], lat, errors, seen_by, polled, i)
                for i in range(n)
            ),
        )
    return lat, errors, seen_by


def test_viewers_polling_points_while_runs_go_see_no_error(rstack, figures):
    stack = rstack
    ensure_worker(stack)
    n_runs, n_viewers = count(2, 5), count(25, 100)
    run_ids = []
    hold = stack.seam.hold("any", POINTS // 2)  # each run waits inside a point for the crowd
    try:
        for i in range(n_runs):
            spec = linear_spec(POINTS, seed=500 + i, max_examples=64, batch_size=32)
            r = stack.request("POST", "/api/runs", json=spec)
            assert r.status_code == 201, r.text
            run_ids.append(r.json()["id"])
        t0 = time.monotonic()
        # its own thread and event loop: a browser test's Playwright (sync API) keeps a loop
        # running in the main thread for the whole session
        with ThreadPoolExecutor(1) as pool:
            lat, errors, seen_by = pool.submit(
                asyncio.run,
                crowd(stack.base_url, stack.seam, run_ids, n_viewers, polls=count(4, 10)),
            ).result()
        took = time.monotonic() - t0
    finally:
        stack.seam.unhold(hold)
    for run_id in run_ids:
        assert stack.wait_run(run_id)["status"] == "done"
    figures["load"] = {
        "viewers": n_viewers,
        "runs": n_runs,
        "requests": len(lat),
        "errors": dict(errors),
        "p50_ms": round(percentile(lat, 50) * 1000, 1),
        "p95_ms": round(percentile(lat, 95) * 1000, 1),
        "max_ms": round(max(lat, default=0) * 1000, 1),
        "seconds": round(took, 1),
    }
    assert not errors, errors
    assert len(seen_by) == n_viewers
    for seen in seen_by:  # every viewer saw every point of its run, none twice
        assert sorted(seen) == list(range(POINTS)), Counter(seen)
