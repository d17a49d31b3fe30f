"""``basin up``: Redis + a worker + the API come up healthy, and SIGTERM stops every process."""

from __future__ import annotations

import os
import signal
import time

import httpx

from service import launch as launcher
from tests.stack import start_basin_up


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_basin_up_starts_a_healthy_stack_and_stops_it_on_sigterm(tmp_path):
    port = launcher.free_port()
    store = tmp_path / "store"
    env = {**os.environ, "BASIN_DEMO": "0", "BASIN_TORCH_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "up.log"
    t0 = time.monotonic()
    proc = start_basin_up(port, store, env, log)
    try:
        health = launcher.wait_healthy(f"http://127.0.0.1:{port}", timeout=90, procs=[proc])
        ready_s = time.monotonic() - t0
        deadline = time.monotonic() + 10
        while "ready: open" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text = log.read_text()
        assert f"ready: open http://127.0.0.1:{port}" in text, text
        assert "starting Redis" in text and "starting a Celery worker" in text
        worker_pid = health["workers"][0]["pid"]
        assert health["workers"][0]["device"] in ("cpu", "cuda")
        assert httpx.get(f"http://127.0.0.1:{port}/api/runs").json() == []
        assert store.is_dir() and (store / "logs" / "worker.log").is_file()
        assert ready_s < 90
    finally:
        if proc.poll() is None:  # the launcher's own group; its children have their own
            os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=40)
    assert code == 0, log.read_text()
    assert "stopping" in log.read_text()
    assert _gone(worker_pid)
    try:
        httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
        raise AssertionError("the API still answers after basin up stopped")
    except httpx.TransportError:
        pass


def test_demo_registration_goes_through_the_api_and_skips_what_is_there(stack, tmp_path):
    from tests import factories

    tok = factories.make_tokenizer("bert")
    ckpt = factories.save(factories.init_classifier(seed=5), tmp_path / "demo-ckpt", tok)
    data = factories.write_classification_dataset(tmp_path / "demo.csv", n=16, seed=9)
    built = {
        "checkpoints": [{"name": "demo-seed5", "path": str(ckpt), "tags": {"seed": 5}}],
        "datasets": [{"name": "demo-eval", "path": str(data), "task": "classification"}],
    }
    said: list[str] = []
    launcher.register_demo(stack.base_url, built, say=said.append)
    assert any("demo-seed5: registered" in s for s in said), said
    ckpts = {c["name"]: c for c in httpx.get(stack.base_url + "/api/checkpoints").json()}
    assert ckpts["demo-seed5"]["tags"]["seed"] == 5
    sets = {d["name"] for d in httpx.get(stack.base_url + "/api/datasets").json()}
    assert "demo-eval.csv" in sets

    said.clear()
    launcher.register_demo(stack.base_url, built, say=said.append)  # a second start
    assert said == [
        "  checkpoint demo-seed5: already registered",
        "  dataset demo-eval: already registered",
    ]
