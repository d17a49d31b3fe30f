"""Issue 9 end to end in real Chromium: a generation run made from the form runs on the real
worker (tiny GPT-2 pair tuned towards negative / positive words, a named-label scorer), its
sentiment curve grows live, and the sample viewer shows the texts of a clicked point — the
same texts the API serves for that point."""

from __future__ import annotations

import pytest

from tests.browser.conftest import CURVE_POINTS, hold_runs, let_through, release_runs
from tests.browser.test_generation_view import _click_point, _sample_texts

pytestmark = pytest.mark.browser
POINTS = 9


@pytest.fixture(scope="module")
def lm_pair(stack, tmp_path_factory) -> dict[str, str]:
    from tests import factories

    root = tmp_path_factory.mktemp("browser-lm")
    pair = factories.build_sentiment_pair(root, kind="gpt2")
    ids = {}
    for key, name in (("neg", "lm-negative"), ("pos", "lm-positive"), ("scorer", "word-sentiment")):
        r = stack.request("POST", "/api/checkpoints/register", json={"path": str(pair[key]), "name": name})
        assert r.status_code in (200, 201), r.text
        ids[key] = r.json()["id"]
    prompts = factories.write_prompts(root / "prompts.csv", n=40)
    r = stack.request("PUT", "/api/datasets?name=prompts.csv", content=prompts.read_bytes())
    assert r.status_code in (200, 201), r.text
    ids["prompts"] = r.json()["id"]
    return ids


def test_a_generation_run_from_the_form_grows_live_and_shows_a_clicked_points_samples(stack, lm_pair, page):
    page.goto(stack.base_url + "/")
    page.select_option("#newrun-type", "linear")
    page.select_option("#newrun-task", "generation")
    page.locator("#newrun-gen-scorer").wait_for(state="visible")
    page.select_option("#newrun-ckpt-1", lm_pair["neg"])
    page.select_option("#newrun-ckpt-2", lm_pair["pos"])
    page.select_option("#newrun-dataset", lm_pair["prompts"])
    page.select_option("#newrun-gen-scorer", lm_pair["scorer"])
    page.fill("#newrun-points", str(POINTS))
    page.fill("#newrun-gen-k", "2")
    page.fill("#newrun-gen-tokens", "8")
    page.fill("#newrun-gen-keep", "6")
    hold_runs(stack)  # the page must be up before the first point, however fast this machine is
    page.click("#newrun-run")
    page.wait_for_url("**/runs/*")
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    page.locator("#run-graphs").wait_for()
    release_runs(stack, page, run_id)
    let_through(stack, page, run_id, 3, CURVE_POINTS)  # the curve grows point by point, live
    page.wait_for_function(f"({CURVE_POINTS})() === {POINTS}", timeout=900_000)  # a limit against a hang
    title = page.locator(".run-graph .gtitle, .run-graph .ytitle").first.text_content()
    assert "sentiment" in (title or "")

    # a clicked point shows that point's generations, as the API has them
    points = {p["index"]: p for p in stack.request("GET", f"/api/runs/{run_id}/points?samples=true").json()["points"]}
    mid = POINTS // 2
    _click_point(page, points[mid]["coords"]["alpha"], mid)
    page.wait_for_function("() => document.querySelectorAll('#run-sample-rows .run-sample-text').length === 6")
    assert _sample_texts(page) == [s["text"] for s in points[mid]["samples"]]
    assert not page.js_errors, page.js_errors
