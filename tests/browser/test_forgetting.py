"""A per-example run from the form: its 95 % bands grow live, the summary gives the barrier's
interval in words, and the Forgetting card (histogram, sortable table, scatter, CSV) appears."""

from __future__ import annotations

import csv
import io

import pytest

from tests.browser.conftest import ARTIFACTS, CURVE_POINTS, hold_runs, let_through, release_runs

pytestmark = pytest.mark.browser

#: JS: [curve points, band vertices] of the first run graph (-1 when a trace is missing).
CURVE_AND_BAND = """() => { const g = document.querySelector('.run-graph .js-plotly-plot');
  if (!g || !g.data) return [-1, -1];
  const c = g.data.find(d => d.meta === 'curve'), b = g.data.find(d => d.meta === 'band');
  return [c ? c.x.length : -1, b ? (b.x || []).length : -1]; }"""
#: JS: the α-lost column of the forgetting table as the page shows it, top to bottom.
ALPHA_LOST = """() => Array.from(document.querySelectorAll(
  '#run-forgetting-table td[data-dash-column="alpha_lost"]')).map(td => td.textContent.trim())"""


def test_a_per_example_run_shows_live_bands_the_barrier_interval_and_forgetting(stack, page, store_family):
    n = 7
    page.goto(stack.base_url + "/")
    page.select_option("#newrun-type", "linear")
    page.select_option("#newrun-ckpt-1", store_family["ft_a"])
    page.select_option("#newrun-ckpt-2", store_family["ft_b"])
    page.select_option("#newrun-dataset", store_family["big"])
    page.fill("#newrun-points", str(n))
    page.fill("#newrun-max", "1500")
    page.check("#newrun-per-example")
    hold_runs(stack)  # watch it from its first point
    page.click("#newrun-run")
    page.wait_for_url("**/runs/*")
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    assert stack.request("GET", f"/api/runs/{run_id}").json()["spec"]["per_example"] is True
    page.locator("#run-graphs").wait_for()
    release_runs(stack, page, run_id)
    # the band grows with the points, live: held after 2 of 7, the page draws 2 points and a
    # closed polygon of 4 vertices (every point's upper limit, then back along the lower ones)
    let_through(stack, page, run_id, 2, f"() => {{ const [c, b] = ({CURVE_AND_BAND})(); return b === 2 * c ? c : -1; }}")
    page.locator("#run-status", has_text="done").wait_for(timeout=180_000)
    page.wait_for_function(f"({CURVE_POINTS})() === {n}")
    page.wait_for_function(f"({CURVE_AND_BAND})()[1] === {2 * n}")

    # the summary: the barrier with its bootstrap interval, and what it means
    page.locator("#run-summary-table", has_text="95 %").first.wait_for()
    loss_row = page.locator("#run-summary-table tr", has_text="loss").first.inner_text()
    assert "[" in loss_row and any(w in loss_row for w in (
        "linearly connected: the barrier is below", "not linearly connected", "inconclusive whether linearly connected"))

    # the Forgetting card: one table row per example correct at the start
    table = stack.request("GET", f"/api/runs/{run_id}/forgetting").json()
    correct = table["counts"]["correct_at_start"]
    assert correct > 0
    page.locator("#run-forgetting-card").wait_for()
    page.locator("#run-forgetting-table td[data-dash-column='text']").first.wait_for()
    assert page.locator("#run-forgetting-table td[data-dash-column='text']").count() == correct
    assert f"{correct} of {table['counts']['examples']} examples" in page.locator("#run-forgetting-counts").inner_text()
    hist = page.evaluate("() => document.querySelector('#run-forgetting-histogram .js-plotly-plot').data[0]")
    assert sum(hist["y"]) == table["counts"]["lost"]
    scatter = page.evaluate("() => document.querySelector('#run-forgetting-scatter .js-plotly-plot').data[0]")
    assert len(scatter["x"]) == table["counts"]["lost"]

    # a click on the α-lost header's sort arrow sorts the rows by it
    before = page.evaluate(ALPHA_LOST)
    page.locator("#run-forgetting-table th[data-dash-column='alpha_lost'] .column-header--sort").click()
    page.wait_for_function(f"({ALPHA_LOST})().join('|') !== {before!r}.join('|')"
                           if len(set(before)) > 1 else "true")
    after = [float(v) for v in page.evaluate(ALPHA_LOST) if v]
    assert after == sorted(after) or after == sorted(after, reverse=True)
    assert len(after) == table["counts"]["lost"]

    # the CSV link downloads the same rows
    href = page.locator("#run-forgetting-csv").get_attribute("href")
    r = page.request.get(stack.base_url + href)
    assert r.ok and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text())))
    assert len(rows) == correct and rows[0].keys() >= {"text", "label", "alpha_lost", "confidence_at_start"}

    shots = ARTIFACTS / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.locator("#run-forgetting-card").scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "run-forgetting.png"), full_page=True)
    assert not page.js_errors, page.js_errors


def test_a_run_without_per_example_results_says_how_to_get_the_card(stack, page, store_family):
    spec = {"path": {"type": "linear", "a": store_family["ft_a"], "b": store_family["ft_b"], "points": 3},
            "dataset": store_family["data"], "task": "classification", "metrics": ["loss", "accuracy"],
            "max_examples": 16}
    r = stack.request("POST", "/api/runs", json=spec)
    assert r.status_code in (200, 201, 202), r.text
    run_id = r.json()["id"]
    page.goto(f"{stack.base_url}/runs/{run_id}")
    page.locator("#run-status", has_text="done").wait_for(timeout=300_000)
    page.locator("#run-forgetting-none", has_text="per-example results").wait_for()
    assert page.locator("#run-forgetting-table").count() == 0
    assert not page.js_errors, page.js_errors
