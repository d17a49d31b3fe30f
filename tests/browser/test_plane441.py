"""A 21×21 plane (441 points) streams into the browser without making the page stutter.

The run page records, for every poll that changed a figure, the time from the poll's
answer to the last patched figure being redrawn (``window.basinUpdates``, see
``frontend/assets/basin.js``); a ``PerformanceObserver`` counts the main thread's long
tasks (> 50 ms). The numbers go to ``test-artifacts/plane441.json``.
"""

from __future__ import annotations

import json
import statistics
import time

import pytest

from tests.browser.conftest import ARTIFACTS, hold_runs, let_through, release_runs

pytestmark = pytest.mark.browser

LONG_TASKS = """
window.__longTasks = [];
try {
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) window.__longTasks.push({start: e.startTime, ms: e.duration});
  }).observe({type: "longtask", buffered: true});
} catch (e) { window.__longTasks = null; }
"""
FILLED = """() => Array.from(document.querySelectorAll('.run-graph .js-plotly-plot')).map(g => {
  const t = g.data.find(d => d.meta === 'grid');
  return {type: t.type, rows: t.z.length, cols: t.z[0].length,
          filled: t.z.flat().filter(v => v !== null && v !== undefined).length};
})"""


def test_plane_441_points_stays_smooth(stack, store_family, page, screenshots):
    page.add_init_script(LONG_TASKS)
    # through the form: the run page then opens by in-app navigation, before the grid fills
    page.goto(stack.base_url + "/")
    page.select_option("#newrun-type", "plane")
    page.locator("#newrun-row-3").wait_for(state="visible")
    for k, name in ((1, "ft_a"), (2, "ft_b"), (3, "ft_c")):
        page.select_option(f"#newrun-ckpt-{k}", store_family[name])
    page.select_option("#newrun-dataset", store_family["big"])
    page.fill("#newrun-nx", "21")
    page.fill("#newrun-ny", "21")
    page.fill("#newrun-max", "256")
    page.fill("#newrun-name", "plane 21x21")
    # No worker while the page opens, so the grid fills in live in front of the test however
    # fast this machine evaluates (a quiet CI box finished all 441 points before the page was
    # up); the run waits in the queue, and the page says so, until a worker joins.
    hold_runs(stack)
    t_start = time.monotonic()
    page.click("#newrun-run")
    page.wait_for_url("**/runs/*")
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    page.locator("#run-graphs").wait_for()
    release_runs(stack, page, run_id)
    loaded_at = page.evaluate("() => performance.now()")
    first = int(page.locator("#run-graphs").get_attribute("data-points"))
    # the grid fills in live: the worker is held at five moments and the page draws each
    for k in (10, 40, 100, 200, 320):
        let_through(stack, page, run_id, k, f"() => ({FILLED})()[0].filled", release=False)
    stack.seam.release(run_id)
    deadline = time.monotonic() + 900  # waits for the run to end; the limit only stops a hang
    while time.monotonic() < deadline and page.locator("#run-status").inner_text().strip() not in (
            "done", "failed", "cancelled"):
        time.sleep(0.5)
    assert page.locator("#run-status").inner_text().strip() == "done", stack.log("worker0")
    page.wait_for_function("document.querySelector('#run-graphs').dataset.points === '441'", timeout=20_000)
    run_s = time.monotonic() - t_start
    page.wait_for_timeout(600)  # the last redraw and the final rebuild

    grids = page.evaluate(FILLED)
    assert [g["filled"] for g in grids] == [441, 441], grids
    assert all(g["rows"] == 21 and g["cols"] == 21 and g["type"] == "heatmap" for g in grids)
    assert page.locator("#run-count").inner_text() == "441 points"

    updates = page.evaluate("() => window.basinUpdates")
    long_tasks = page.evaluate("() => window.__longTasks")
    assert long_tasks is not None, "this Chromium has no longtask PerformanceObserver"
    live = [t for t in long_tasks if t["start"] >= loaded_at]
    totals = sorted(u["total_ms"] for u in updates)
    report = {
        "run_id": run_id, "grid": [21, 21], "points": 441, "run_s": round(run_s, 1),
        "points_at_page_load": first, "updates": len(updates),
        "median_update_ms": round(statistics.median(totals), 1) if totals else None,
        "p90_update_ms": round(totals[int(0.9 * (len(totals) - 1))], 1) if totals else None,
        "worst_update_ms": round(totals[-1], 1) if totals else None,
        "median_compute_ms": round(statistics.median(u["compute_ms"] for u in updates), 2) if updates else None,
        "long_tasks_while_live": len(live),
        "long_task_ms_while_live": [round(t["ms"]) for t in live],
        "long_tasks_including_page_load": len(long_tasks),
        "update_log": [{k: round(v, 1) if isinstance(v, float) else v for k, v in u.items()} for u in updates],
    }
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "plane441.json").write_text(json.dumps(report, indent=2))
    page.screenshot(path=str(screenshots / "run-plane441.png"), full_page=True)
    print(f"\n441-point plane: {len(updates)} live updates, median {report['median_update_ms']} ms, "
          f"worst {report['worst_update_ms']} ms, {len(live)} long tasks while live, run {run_s:.0f} s")

    assert first < 441 and len(updates) >= 5, "the grid did not fill in live"
    assert sum(u["added"] for u in updates) >= 441 - first - 5
    # smooth = an update takes well under the 500 ms poll interval (≈80 ms on a quiet 2-core box)
    assert report["median_update_ms"] < 300, report
    assert report["worst_update_ms"] < 1500, report
    assert not page.js_errors, page.js_errors
