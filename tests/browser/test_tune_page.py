"""The Tune page in real headless Chromium (issue 25): a family of two members started from
the form opens its job page; while the worker is held at step 3 of the first member (the
stack's seam) the page draws that member's training loss live — two steps — and the
family's progress; released, both members end done with their held-out accuracy and links
to their final checkpoints, and the Tune page lists the job."""

from __future__ import annotations

import pytest

from tests.browser.conftest import pick_option

pytestmark = pytest.mark.browser

LOSS_POINTS = """() => { const g = document.querySelector('#tune-loss .js-plotly-plot');
  return g && g.data && g.data.length ? g.data[0].x.length : -1; }"""


def test_a_family_from_the_form_shows_its_loss_live_then_each_members_accuracy(
    stack, store_family, page
):
    hold = stack.seam.hold("any", 3)  # the first member stops before its step 3 is recorded
    try:
        page.goto(stack.base_url + "/tunes")
        pick_option(page, "tune-base", "init", start=True)
        pick_option(page, "tune-dataset", "eval.csv")
        page.fill("#tune-seeds", "0, 1")
        page.fill("#tune-steps", "6")
        page.fill("#tune-every", "3")
        page.fill("#tune-batch", "8")
        page.fill("#tune-examples", "32")
        page.click("#tune-start")
        page.wait_for_url("**/tunes/*")
        page.wait_for_function(f"({LOSS_POINTS})() === 2", timeout=120_000)  # steps 1 and 2, live
        assert page.locator("#tune-status").inner_text() == "running"
        assert "0 of 2 members done" in page.locator("#tune-progress").inner_text()
        assert page.locator("#tune-members tr[data-status=running]").count() == 1
        assert (
            page.locator("#tune-members tr[data-status=queued]").count() == 1
        )  # one worker: it waits
    finally:
        stack.seam.unhold(hold)
    page.locator("#tune-status", has_text="done").wait_for(timeout=300_000)
    rows = page.locator("#tune-members tbody tr")
    assert rows.count() == 2
    for i in range(2):
        acc = rows.nth(i).locator(".tune-acc").inner_text()
        assert 0.0 <= float(acc) <= 1.0
        assert rows.nth(i).locator(".tune-final").count() == 1
    assert page.evaluate(f"({LOSS_POINTS})()") == 6
    assert not page.js_errors  # type: ignore[attr-defined]
    # a member's final-checkpoint link lands on that checkpoint's row, highlighted
    final = rows.nth(1).locator(".tune-final a, a.tune-final").first
    ckpt_id = final.get_attribute("href").rsplit("#", 1)[1]
    final.click()
    page.wait_for_url("**/checkpoints#*")
    anchored = page.locator("#ckpt-table tr.ckpt-anchored")
    anchored.wait_for(timeout=60_000)
    assert anchored.count() == 1 and anchored.get_attribute("data-id") == ckpt_id
    assert anchored.is_visible()
    page.goto(stack.base_url + "/tunes")
    page.locator("#tunes-list .tunes-link").first.wait_for()
    assert "2 done / 2" in page.locator("#tunes-list").inner_text()
