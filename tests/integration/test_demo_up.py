"""``basin up``'s first start: the MiniLM demo is a tune job the worker trains while the
dashboard shows it (issue 25's last part).

The real stack (redis-server, a Celery worker with the worker hook, uvicorn). The demo's
shipped spec, shrunk (:data:`tests.core.test_demo.TINY_SPEC`), over a tiny BERT body and the
real tweets (:func:`tests.core.test_demo.tiny_assets`). The worker is held at an exact
training step (the seam) while the test reads what a person sees; synchronised on events
(the seam's arrival files, the API's statuses), never on sleeps.

``BASIN_SLOW=1``: the real thing end to end — ``basin up`` on an empty store with the real
all-MiniLM-L6-v2 — timed from start to the dashboard, to the family trained, to the
checkpoints named.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from frontend.first_start import empty_store_notice, minilm_banner
from service import launch as launcher
from tests.core.test_demo import TINY_SPEC, tiny_assets
from tests.stack import running_stack, start_basin_up

LIMIT_S = 600  # only stops a hung test; each wait below is for an event


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_up")
    with running_stack(root / "store", workers=1, ui=False, seam=root / "seam") as s:
        yield s


def _redis_port(stack) -> int:
    return int(stack.redis_url.rsplit(":", 1)[1].split("/", 1)[0])


def _health(stack) -> dict:
    return httpx.get(stack.base_url + "/api/health", timeout=10).json()


def _until(stack, what, test):
    """Poll ``/api/health`` until ``test(health)`` holds (an event the service records)."""
    end = time.monotonic() + LIMIT_S
    while True:
        health = _health(stack)
        if test(health):
            return health
        assert time.monotonic() < end, (what, health, stack.log("worker0"))
        time.sleep(0.05)


def _start(stack, said: list[str], **kw) -> tuple[threading.Thread, dict]:
    box: dict = {}

    def go() -> None:
        box["doc"] = launcher.minilm_demo(
            stack.base_url,
            stack.store,
            said.append,
            _redis_port(stack),
            token=stack.token,
            assets=tiny_assets,
            poll_s=0.05,
            **kw,
        )

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, box


def test_the_first_start_trains_the_demo_as_a_tune_job_shown_live_then_names_it_once(up):
    """Issue 25: the first start submits the shipped spec as a tune job; while the worker is
    held the banner and the job's page show its members training (issue 28's banner: what,
    how far, when, the LM pair next); when it ends its checkpoints carry the demo's names and
    tags; a second start trains nothing."""
    seam = up.seam
    hold = seam.hold("any", 2)  # every member stops before its step 2 until let go
    said: list[str] = []
    t, box = _start(up, said, spec=TINY_SPEC)
    health = _until(up, "the tune job is submitted", lambda h: (h.get("demo") or {}).get("run_id"))
    tune_id = health["demo"]["run_id"]
    assert health["demo"]["run_url"].endswith(f"/tunes/{tune_id}")
    seam.wait(up, f"{tune_id}.0", 2)  # member 0 has trained step 1 and is held

    # what a person sees meanwhile: the family training, live, on the banner and its page
    health = _until(up, "step 1 shows", lambda h: "step 1/4" in str(h["demo"].get("stage")))
    demo = health["demo"]
    assert health["status"] == "ok" and demo["state"] == "building"
    assert demo["stage"] == "training minilm-full-o1-s0: step 1/4 (member 1/2)"
    assert [(m["name"], m["status"], m["step"]) for m in demo["members"]] == [
        ("minilm-full-o1-s0", "running", 1),
        ("minilm-full-o2-s0", "queued", 0),
    ]
    assert demo["eta_s"] is not None and demo["eta_s"] > 0  # from the tune job's pace
    assert 0.0 < demo["fraction"] < 0.5
    assert "MiniLM" in demo["what"] and "tune job" in demo["what"]
    assert health["demo_lm"]["state"] == "waiting" and "SmolLM2" in health["demo_lm"]["what"]
    banner = str(minilm_banner(health))
    assert "ready in" in banner and "Then: " in banner and "SmolLM2" in banner
    assert "First start: building the demo" in banner and f"/tunes/{tune_id}" in banner
    assert (
        "minilm-full-o1-s0 1/4 (running)" in banner and "minilm-full-o2-s0 0/4 (queued)" in banner
    )
    assert "being built" in str(empty_store_notice(health))
    page = up.request("GET", f"/api/tunes/{tune_id}").json()  # what /tunes/<id> draws
    assert page["name"] == "MiniLM demo" and page["status"] == "running"
    assert [p["step"] for p in page["member_list"][0]["losses"]] == [1]  # the live loss
    assert page["spec"]["orders"] == [1, 2] and page["spec"]["seeds"] == [0]

    seam.unhold(hold)
    t.join(LIMIT_S)
    assert not t.is_alive()
    doc = box["doc"]
    assert doc["state"] == "done" and doc["fraction"] == 1.0, doc
    assert _health(up)["demo"]["state"] == "done" and minilm_banner(_health(up)) == []

    # the checkpoints in the store under the demo's names, with the demo's and the family's tags
    ckpts = {c["name"]: c for c in up.request("GET", "/api/checkpoints").json()}
    named = {n: c for n, c in ckpts.items() if (c.get("tags") or {}).get("tune") == tune_id}
    assert set(named) == {
        "minilm-init",
        "minilm-seed1",
        "minilm-seed2",
        "minilm-seed1-step2",
        "minilm-seed2-step2",
    }
    for c in named.values():
        assert c["tags"]["demo"] == "minilm" and c["tags"]["task"] == "tweet-sentiment"
        assert c["tags"]["family"] == "minilm" and c["tags"]["seed"] == 0
    assert (
        named["minilm-seed1"]["tags"]["order"] == 1 and named["minilm-seed2"]["tags"]["order"] == 2
    )
    assert (
        named["minilm-seed1"]["tags"]["final"]
        and "heldout_accuracy" in named["minilm-seed1"]["tags"]
    )
    assert (
        named["minilm-seed2-step2"]["tags"]["step"] == 2
        and named["minilm-init"]["tags"]["step"] == 0
    )
    assert ckpts["minilm"]["tags"]["role"] == "pre-trained body"  # the base the job trained from
    sets = {d["name"] for d in up.request("GET", "/api/datasets").json()}
    assert {"tweets-train.csv", "tweets-eval.csv"} <= sets
    assert any("tune job" in s and "submitted" in s for s in said), said

    # a second start trains nothing: it finds the named checkpoints
    arrivals = len(seam.arrived(f"{tune_id}.0"))
    again = launcher.minilm_demo(
        up.base_url,
        up.store,
        said.append,
        _redis_port(up),
        token=up.token,
        spec=TINY_SPEC,
        assets=tiny_assets,
        poll_s=0.05,
    )
    assert again["state"] == "done" and "earlier start" in again["stage"]
    tunes = [x for x in up.request("GET", "/api/tunes").json() if x["name"] == "MiniLM demo"]
    assert [x["id"] for x in tunes] == [tune_id]
    assert len(seam.arrived(f"{tune_id}.0")) == arrivals


def test_a_cancelled_demo_family_shows_in_the_banner_and_stops_nothing_else(up):
    seam = up.seam
    hold = seam.hold("any", 2)
    spec = {**TINY_SPEC, "family": "minilm-b", "name": "MiniLM demo (cancelled)"}
    said: list[str] = []
    t, box = _start(up, said, spec=spec)
    health = _until(
        up,
        "the tune job is submitted",
        lambda h: (h.get("demo") or {}).get("run_id") and "minilm-b" in str(h["demo"].get("stage")),
    )
    tune_id = health["demo"]["run_id"]
    seam.wait(up, f"{tune_id}.0", 2)
    assert up.request("POST", f"/api/tunes/{tune_id}/cancel").json()["status"] == "cancelled"
    seam.unhold(hold)
    t.join(LIMIT_S)
    assert not t.is_alive()
    doc = box["doc"]
    assert doc["state"] == "failed" and "ended cancelled" in doc["error"], doc
    health = _health(up)
    assert health["status"] == "ok"
    banner = str(minilm_banner(health))
    assert (
        "could not be built" in banner and "cancelled" in banner and f"/tunes/{tune_id}" in banner
    )
    names = {c["name"] for c in up.request("GET", "/api/checkpoints").json()}
    assert "minilm-b-init" not in names  # nothing named after a family that did not finish
    assert up.request("GET", "/api/runs").status_code == 200


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("BASIN_SLOW") != "1", reason="trains real MiniLM; set BASIN_SLOW=1"
)
def test_real_first_start_of_basin_up_trains_and_names_the_minilm_demo(tmp_path):
    """``basin up`` on an empty store, the real all-MiniLM-L6-v2 and tweets: the family trains
    as a tune job and its checkpoints are named; prints the wall times."""
    port = launcher.free_port()
    store = tmp_path / "store"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("BASIN_DEMO", None)
    log = tmp_path / "up.log"
    base = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    proc = start_basin_up(port, store, env, log)
    try:
        launcher.wait_healthy(base, timeout=120, procs=[proc])
        healthy_s = time.monotonic() - t0
        trained_s = None
        end = time.monotonic() + 1800
        while True:
            demo = httpx.get(base + "/api/health", timeout=10).json().get("demo") or {}
            if trained_s is None and demo.get("state") == "registering":
                trained_s = time.monotonic() - t0
            if demo.get("state") in ("done", "failed"):
                break
            assert time.monotonic() < end and proc.poll() is None, log.read_text()
            time.sleep(0.5)
        done_s = time.monotonic() - t0
        assert demo["state"] == "done", (demo, log.read_text())
        assert demo["run_url"].endswith(f"/tunes/{demo['run_id']}")
        ckpts = {c["name"]: c for c in httpx.get(base + "/api/checkpoints", timeout=10).json()}
        assert {"minilm", "minilm-init", "minilm-seed1", "minilm-seed2"} <= set(ckpts)
        assert {f"minilm-seed{s}-step{k}" for s in (1, 2) for k in (15, 30, 45)} <= set(ckpts)
        acc = {n: ckpts[n]["tags"]["heldout_accuracy"] for n in ("minilm-seed1", "minilm-seed2")}
        assert min(acc.values()) >= 0.7, acc
        tune = httpx.get(f"{base}/api/tunes/{demo['run_id']}", timeout=10).json()
        print(
            f"\nbasin up first start: healthy {healthy_s:.1f} s, family trained {trained_s or done_s:.1f} s, "
            f"checkpoints named {done_s:.1f} s after start (demo status build_s {demo.get('build_s')}); "
            f"held-out accuracy {acc}; members' training "
            f"{[round((m['finished'] or 0) - (m['started'] or 0), 1) for m in tune['member_list']]} s"
        )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
