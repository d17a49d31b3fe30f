"""The dashboard in real headless Chromium against the real stack (Redis, Celery worker, uvicorn).

What a user does: upload a checkpoint, create runs from the form, watch them fill in live,
share the link, and read the API's reason when a form is wrong.
"""

from __future__ import annotations

import json
import statistics
import time
import zipfile

import pytest

from tests import factories
from tests.browser.conftest import ARTIFACTS, CURVE_POINTS, hold_runs, let_through, release_runs

pytestmark = pytest.mark.browser

GRAPH_DATA = """() => Array.from(document.querySelectorAll('.run-graph .js-plotly-plot'))
  .map(g => g.data.map(t => ({type: t.type, meta: t.meta, name: t.name, text: t.text,
                               x: t.x, y: t.y, z: t.z})))"""

PLOTTED = "() => { const g = document.querySelector('.run-graph .js-plotly-plot'); return g && g.data; }"


def _count(page) -> int:
    return int(page.locator("#run-graphs").get_attribute("data-points") or -1)


def _wait_status(page, statuses=("done",), timeout=90.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s = page.locator("#run-status").inner_text().strip()
        if s in statuses:
            return s
        time.sleep(0.2)
    raise AssertionError(f"run status stayed {s!r}")


def test_upload_checkpoint_through_the_form_lists_it(stack, page, classifier_family, tmp_path):
    step = sorted(k for k in classifier_family if k.startswith("ft_a-step"))[0]
    archive = tmp_path / "step.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in classifier_family[step].iterdir():
            z.write(f, f"{step}/{f.name}")
    page.goto(stack.base_url + "/checkpoints")
    page.set_input_files("#ckpt-upload-file", str(archive))
    page.fill("#ckpt-upload-name", "uploaded-step")
    page.click("#ckpt-upload-button")
    status = page.locator("#ckpt-upload-status")
    status.filter(has_text="Uploaded").or_(status.filter(has_text="Already stored")).wait_for()
    assert page.locator(".basin-upload-progress .progress-bar").inner_text() == "100%"
    page.locator("#ckpt-table .ckpt-name", has_text="uploaded-step").wait_for()
    listed = [m["name"] for m in stack.request("GET", "/api/checkpoints").json()]
    assert "uploaded-step" in listed
    # a broken file is refused with the API's reason on the upload row, and nothing is listed
    bad = tmp_path / "broken.zip"
    bad.write_bytes(b"this is not a zip archive")
    page.set_input_files("#ckpt-upload-file", str(bad))
    page.fill("#ckpt-upload-name", "broken")
    page.click("#ckpt-upload-button")
    status.filter(has_text="Upload failed").wait_for()
    assert status.get_attribute("data-state") == "danger"
    assert "broken" not in [m["name"] for m in stack.request("GET", "/api/checkpoints").json()]


def test_linear_run_from_form_fills_in_live_and_share_link_matches(
        stack, store_family, page, new_context, screenshots):
    n = 17
    page.goto(stack.base_url + "/")
    page.select_option("#newrun-type", "linear")
    page.select_option("#newrun-ckpt-1", store_family["ft_a"])
    page.select_option("#newrun-ckpt-2", store_family["ft_b"])
    page.select_option("#newrun-dataset", store_family["big"])
    page.fill("#newrun-points", str(n))
    page.fill("#newrun-max", "1500")
    hold_runs(stack)  # the page must be up before the first point, however fast this machine is
    page.click("#newrun-run")
    page.wait_for_url("**/runs/*")
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    page.locator("#run-graphs").wait_for()
    release_runs(stack, page, run_id)
    # the worker is held after 4 of 17 points: the count and the curve show 4 ...
    count_js = "() => Number(document.querySelector('#run-graphs').dataset.points)"
    let_through(stack, page, run_id, 4, count_js, release=False)
    # ... and the share link, opened mid-run, shows those 4 too, then catches up live
    other = new_context().new_page()
    other.goto(page.locator("#run-share-link").input_value())
    other.locator("#run-graphs").wait_for()
    other.wait_for_function(f"({count_js})() === 4")
    stack.seam.release(run_id)
    seen = [4]
    while page.locator("#run-status").inner_text().strip() not in ("done", "failed"):
        c = _count(page)
        if c != seen[-1]:
            seen.append(c)
        time.sleep(0.1)
    assert _wait_status(page) == "done"
    page.wait_for_function(f"document.querySelector('#run-graphs').dataset.points === '{n}'")
    assert page.locator("#run-count").inner_text() == f"{n} points"
    assert seen == sorted(seen), f"the point count went backwards: {seen}"
    # the figures are patched after the point store: wait for the drawn curve itself
    page.wait_for_function(f"({CURVE_POINTS})() === {n}")
    figs = page.evaluate(GRAPH_DATA)
    assert len(figs) == 2  # loss and accuracy
    curve = next(t for t in figs[0] if t["meta"] == "curve")
    assert len(curve["x"]) == n and curve["x"] == sorted(curve["x"])
    anchors = [t for t in figs[0] if t["meta"] == "anchor"]
    assert [a["text"][0] for a in anchors] == ["ft_a", "ft_b"]
    assert any(t["meta"] == "chord" for t in figs[0])
    ann = page.locator(".run-graph .annotation-text").first.text_content()
    assert ann.startswith("barrier ")
    page.screenshot(path=str(screenshots / "run-linear.png"), full_page=True)

    # the share link opened mid-run caught up live; opened after the run, it loads the result
    other.wait_for_function(f"document.querySelector('#run-graphs').dataset.points === '{n}'", timeout=30_000)
    late = new_context().new_page()
    late.goto(stack.base_url + f"/runs/{run_id}")
    late.locator("#run-graphs").wait_for()
    assert _count(late) == n
    for pg in (other, late):
        pg.wait_for_function(PLOTTED)
        pg.wait_for_function(f"({CURVE_POINTS})() === {n}")  # figures are patched after the store
        other_curve = next(t for t in pg.evaluate(GRAPH_DATA)[0] if t["meta"] == "curve")
        assert other_curve["x"] == curve["x"] and other_curve["y"] == pytest.approx(curve["y"])

    # latency: the worker's stream id (ms timestamp) → the point's arrival in the browser
    arrivals = page.evaluate("() => window.basinArrivals")
    entries = stack.redis().xrange(f"basin:run:{run_id}:points")
    delays = []
    for sid, fields in entries:
        idx = str(json.loads(fields["point"])["index"])
        if idx in arrivals:
            delays.append(arrivals[idx] - int(sid.split("-")[0]))
    assert delays, "no point arrived through live polling"
    report = {"run_id": run_id, "points": len(delays), "median_ms": statistics.median(delays),
              "worst_ms": max(delays), "poll_interval_ms": 500, "delays_ms": delays}
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "latency.json").write_text(json.dumps(report, indent=2))
    print(f"\npoint latency stream→browser: median {report['median_ms']:.0f} ms, "
          f"worst {report['worst_ms']:.0f} ms over {len(delays)} points")
    assert report["median_ms"] < 3000
    assert not page.js_errors, page.js_errors


def test_plane_run_renders_grid_with_three_anchors(stack, store_family, page, screenshots):
    page.goto(stack.base_url + "/")
    page.select_option("#newrun-type", "plane")
    page.locator("#newrun-row-3").wait_for(state="visible")
    assert page.locator("#newrun-row-3-label").inner_text() == "Checkpoint C"
    assert not page.locator("#newrun-row-points").is_visible()
    page.select_option("#newrun-ckpt-1", store_family["ft_a"])
    page.select_option("#newrun-ckpt-2", store_family["ft_b"])
    page.select_option("#newrun-ckpt-3", store_family["ft_c"])
    page.select_option("#newrun-dataset", store_family["data"])
    page.fill("#newrun-nx", "7")
    page.fill("#newrun-ny", "7")
    page.click("#newrun-run")
    page.wait_for_url("**/runs/*")
    _wait_status(page, timeout=120)
    page.wait_for_function("document.querySelector('#run-graphs').dataset.points === '49'")
    page.wait_for_function(PLOTTED)
    figs = page.evaluate(GRAPH_DATA)
    grid = next(t for t in figs[0] if t["meta"] == "grid")
    assert grid["type"] == "heatmap"
    assert len(grid["z"]) == 7 and sum(v is not None for row in grid["z"] for v in row) == 49
    anchors = [t for t in figs[0] if t["meta"] == "anchor"]
    assert [a["text"][0] for a in anchors] == ["ft_a", "ft_b", "ft_c"]
    page.screenshot(path=str(screenshots / "run-plane-heatmap.png"), full_page=True)
    page.get_by_text("3D surface").click()
    page.wait_for_function(
        "document.querySelector('.run-graph .js-plotly-plot').data[0].type === 'surface'")
    page.wait_for_timeout(800)
    page.screenshot(path=str(screenshots / "run-plane-surface.png"), full_page=True)
    assert not page.js_errors, page.js_errors


def test_incompatible_checkpoints_show_the_apis_reason(stack, store_family, page, tmp_path):
    three = factories.save(factories.init_classifier(0, num_labels=3), tmp_path / "three",
                           factories.make_tokenizer("bert"))
    r = stack.request("POST", "/api/checkpoints/register",
                      json={"path": str(three), "name": "three-labels", "tags": {}})
    assert r.status_code in (200, 201), r.text
    page.goto(stack.base_url + "/")
    page.select_option("#newrun-ckpt-1", store_family["ft_a"])
    page.select_option("#newrun-ckpt-2", r.json()["id"])
    page.select_option("#newrun-dataset", store_family["data"])
    page.click("#newrun-check")
    err = page.locator("#newrun-result.newrun-error")
    err.wait_for()
    text = err.inner_text()
    assert "classifier" in text, text  # the mismatched head tensors are named
    runs_before = len(stack.request("GET", "/api/runs").json())
    page.click("#newrun-run")
    page.locator("#newrun-result.newrun-error").wait_for()
    assert "/runs/" not in page.url
    assert len(stack.request("GET", "/api/runs").json()) == runs_before
