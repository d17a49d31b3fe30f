"""``basin up``'s LM demo in the background: its progress reaches ``/api/health`` and the
dashboard's banner while it builds, its checkpoints and datasets land in the store when it
ends, its ready run is submitted once, and a failure shows without breaking anything.

The real stack (redis-server, a Celery worker, uvicorn); a tiny Llama stands in for SmolLM2
(:func:`tests.lm_factories.build_tiny_llama`) and is fine-tuned on the real tweets.
"""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest

from basin.demo_lm import NEGATIVE, POSITIVE, build_lm_demo
from frontend.app import demo_lm_banner
from service import launch as launcher
from tests import factories
from tests.core.test_demo_lm import TINY
from tests.lm_factories import build_tiny_llama
from tests.stack import running_stack

WAIT_S = 120  # upper bound on an event that normally takes a second (busy CI machine)


@pytest.fixture(scope="module")
def up(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_lm_up")
    with running_stack(root / "store", workers=1, ui=False) as s:
        s.tiny_base = build_tiny_llama(root / "tiny-llama")  # type: ignore[attr-defined]
        yield s


def _redis_port(stack) -> int:
    return int(stack.redis_url.rsplit(":", 1)[1].split("/", 1)[0])


def _health(stack) -> dict:
    return httpx.get(stack.base_url + "/api/health", timeout=10).json()


def _background(stack, build, said: list[str]) -> threading.Thread:
    t = threading.Thread(target=launcher.demo_lm_background,
                         args=(stack.base_url, stack.store, _redis_port(stack), said.append),
                         kwargs={"token": stack.token, "build": build}, daemon=True)
    t.start()
    return t


def test_progress_shows_in_health_and_banner_then_the_lms_are_registered(up):
    halfway, go_on = threading.Event(), threading.Event()

    def build(out, on_progress):
        on_progress(0.5, "fine-tuning on negative tweets: step 20/40 (loss 4.10)")
        halfway.set()
        assert go_on.wait(WAIT_S)
        return build_lm_demo(out, base=up.tiny_base, on_progress=on_progress, **TINY)

    said: list[str] = []
    t = _background(up, build, said)
    assert halfway.wait(WAIT_S)
    health = _health(up)
    assert health["status"] == "ok"  # the service is usable while the demo builds
    doc = health["demo_lm"]
    assert doc["state"] == "building" and doc["fraction"] == pytest.approx(0.475)
    assert doc["stage"] == "fine-tuning on negative tweets: step 20/40 (loss 4.10)"
    banner = str(demo_lm_banner(health))
    assert "Building the LM demo" in banner and "step 20/40" in banner and "48%" in banner
    assert httpx.get(up.base_url + "/api/checkpoints", timeout=10).status_code == 200

    go_on.set()
    t.join(WAIT_S)
    assert not t.is_alive()
    doc = _health(up)["demo_lm"]
    assert doc["state"] == "done" and doc["fraction"] == 1.0, doc
    ckpts = {c["name"]: c for c in httpx.get(up.base_url + "/api/checkpoints", timeout=10).json()}
    assert {NEGATIVE, POSITIVE, "smollm2-135m"} <= set(ckpts)
    assert ckpts[NEGATIVE]["tags"]["data"] == "negative tweets"
    sets = {d["name"] for d in httpx.get(up.base_url + "/api/datasets", timeout=10).json()}
    assert {"lm-prompts.csv", "lm-heldout.csv"} <= sets
    assert any("LM demo: fine-tuning on negative tweets" in s for s in said)


def test_a_failed_build_shows_in_the_banner_and_breaks_nothing(up):
    def build(out, on_progress):
        on_progress(0.1, "converting SmolLM2-135M from GGUF")
        raise OSError("No space left on device (simulated)")

    said: list[str] = []
    t = _background(up, build, said)
    t.join(WAIT_S)
    health = _health(up)
    assert health["status"] == "ok"
    doc = health["demo_lm"]
    assert doc["state"] == "failed" and "No space left on device (simulated)" in doc["error"]
    banner = str(demo_lm_banner(health))
    assert "could not be built" in banner and "No space left on device" in banner
    assert httpx.get(up.base_url + "/api/runs", timeout=10).status_code == 200


def test_the_ready_run_sentiment_per_alpha_is_submitted_once(up, tmp_path):
    tok = factories.make_tokenizer("bert")
    scorer = factories.init_classifier(0)
    scorer.config.id2label, scorer.config.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
    path = factories.save(scorer, up.store / "demo-src" / "scorer", tok)
    status, body = launcher.http_json("POST", up.base_url + "/api/checkpoints/register",
                                      {"path": str(Path(path).resolve()), "name": "minilm-seed1"},
                                      token=up.token)
    assert status < 300 or "already" in str(body), body

    def build(out, on_progress):
        return build_lm_demo(out, base=up.tiny_base, on_progress=on_progress, **TINY)

    first = launcher.demo_lm_background(up.base_url, up.store, _redis_port(up), print, token=up.token, build=build)
    assert first["state"] == "done" and first["run_id"], first
    again = launcher.demo_lm_background(up.base_url, up.store, _redis_port(up), print, token=up.token, build=build)
    assert again["run_id"] == first["run_id"]  # a restart does not submit it twice
    runs = [r for r in httpx.get(up.base_url + "/api/runs", timeout=10).json()
            if r.get("name") == launcher.DEMO_LM_RUN_NAME]
    assert len(runs) == 1
    run = httpx.get(f"{up.base_url}/api/runs/{first['run_id']}", timeout=10).json()
    assert run["spec"]["task"] == "generation"
    assert run["spec"]["path"]["range"] == [-0.5, 1.5] and run["spec"]["path"]["points"] == 9
