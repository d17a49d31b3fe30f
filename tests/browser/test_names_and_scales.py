"""Issue 14 in real Chromium against the real stack: a run made from the form keeps its
checkpoints' names on its page, in its HTML export and in ``basin plot`` of its stored
document; a zero barrier says "no barrier"; planes are drawn with equal axis scales."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from basin.figures import LABEL_MAX, ellipsize
from tests.browser.conftest import CURVE_POINTS

pytestmark = pytest.mark.browser

LONG = "ft_a-after-twenty-steps-on-sst2-seed0-lr3e-5"  # longer than a label may be
HEX_ID = re.compile(r"\b[0-9a-f]{40,64}\b")
#: every metric figure on the page (a curve or a grid; not the per-layer distances): its title
#: and its anchors' labels and hover names
FIGS = """() => Array.from(document.querySelectorAll('.js-plotly-plot'))
  .filter(g => g.data && g.data.some(t => t.meta === 'curve' || t.meta === 'grid')).map(g => ({
  title: (g.layout.title && g.layout.title.text) || '',
  anchors: g.data.filter(t => t.meta === 'anchor').map(t => ({text: t.text[0], hover: t.hovertext[0]})),
  annotations: (g.layout.annotations || []).map(a => a.text)}))"""


#: the first run graph is drawn with its anchors
ANCHORED = """() => { const g = document.querySelector('.run-graph .js-plotly-plot');
  return !!(g && g.data && g.data.some(t => t.meta === 'anchor')); }"""


def _wait_done(page, n: int) -> None:
    page.wait_for_function("() => { const s = document.querySelector('#run-status');"
                           " return s && s.textContent.trim() === 'done'; }", timeout=120_000)
    page.wait_for_function(f"() => {{ const g = document.querySelector('#run-graphs');"
                           f" return g && g.dataset.points === '{n}'; }}")


def _check_names(figs: list[dict], where: str) -> None:
    assert figs, f"{where}: no figure"
    for f in figs:
        assert [a["text"] for a in f["anchors"]] == [ellipsize(LONG), "ft_b"], where
        assert len(f["anchors"][0]["text"]) == LABEL_MAX
        assert [a["hover"] for a in f["anchors"]] == [LONG, "ft_b"], where  # the whole name on hover
        assert not HEX_ID.search(f["title"]), f"{where}: a sha id in the title {f['title']!r}"
        assert ellipsize(LONG) in f["title"] and "ft_b" in f["title"], where


def _open_html(page, html: str, path: Path) -> list[dict]:
    path.write_text(html, encoding="utf-8")
    page.goto(path.as_uri())
    page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length > 0 && "
                           "Array.from(document.querySelectorAll('.js-plotly-plot')).every(g => g.data)")
    return page.evaluate(FIGS)


@pytest.fixture(scope="module")
def long_named(stack, classifier_family) -> str:
    """A checkpoint compatible with ft_b under a name longer than a label."""
    step = sorted(k for k in classifier_family if k.startswith("ft_a-step"))[1]
    r = stack.request("POST", "/api/checkpoints/register",
                      json={"path": str(classifier_family[step]), "name": LONG, "tags": {"seed": 0}})
    assert r.status_code in (200, 201), r.text
    assert r.json()["name"] == LONG
    return r.json()["id"]


def test_a_form_made_run_names_its_checkpoints_on_its_page_report_and_basin_plot(
        stack, store_family, long_named, page, screenshots, tmp_path):
    n = 5
    page.goto(stack.base_url + "/")
    page.select_option("#newrun-type", "linear")
    page.select_option("#newrun-ckpt-1", long_named)  # the form sends store ids
    page.select_option("#newrun-ckpt-2", store_family["ft_b"])
    page.select_option("#newrun-dataset", store_family["data"])
    page.fill("#newrun-points", str(n))
    page.click("#newrun-run")
    page.wait_for_url("**/runs/*")
    run_id = page.url.rstrip("/").rsplit("/", 1)[-1]
    _wait_done(page, n)
    page.wait_for_function(f"({CURVE_POINTS})() === {n}")
    page.wait_for_function(ANCHORED)
    _check_names(page.evaluate(FIGS), "run page")
    assert not HEX_ID.search(page.locator("#run-title").inner_text())
    page.screenshot(path=str(screenshots / "run-long-names.png"), full_page=True)

    # the stored document names them (the form posted ids), and so does its HTML export
    doc = stack.wait_stored(run_id)
    assert doc["names"][long_named] == LONG and doc["names"][store_family["ft_b"]] == "ft_b"
    assert doc["tags"][long_named] == {"seed": 0}
    report = page.request.get(stack.base_url + f"/reports/{run_id}.html")
    assert report.ok, report.text()
    _check_names(_open_html(page, report.text(), tmp_path / "report.html"), "HTML export")
    assert LONG in page.locator("h2:has-text('Anchors') + table").inner_text()  # the anchors table names them too
    page.screenshot(path=str(screenshots / "report-long-names.png"), full_page=True)

    # basin plot of the stored document
    stored = stack.store / "runs" / f"{run_id}.json"
    out = tmp_path / "plot.html"
    proc = subprocess.run([sys.executable, "-m", "basin.cli", "plot", str(stored), "-o", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    _check_names(_open_html(page, out.read_text(encoding="utf-8"), tmp_path / "plot-open.html"), "basin plot")
    assert not page.js_errors, page.js_errors


def test_a_run_without_a_barrier_says_so_plainly(stack, store_family, page, screenshots):
    """A checkpoint interpolated with itself: a flat curve (float noise at most) — no barrier,
    never "barrier −0 pts at α = 0.00"."""
    spec = {"path": {"type": "linear", "a": "ft_a", "b": "ft_a", "points": 5}, "dataset": store_family["data"],
            "metrics": ["loss", "accuracy"], "max_examples": 32}
    r = stack.request("POST", "/api/runs", json=spec)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    stack.wait_run(run_id)
    page.goto(stack.base_url + f"/runs/{run_id}")
    _wait_done(page, 5)
    page.wait_for_function("() => { const gs = Array.from(document.querySelectorAll('.run-graph .js-plotly-plot'));"
                           " return gs.length === 2 && gs.every(g => g.layout && (g.layout.annotations || []).length > 0); }")
    figs = page.evaluate(FIGS)
    assert [f["annotations"] for f in figs] == [["no barrier"], ["no barrier"]]
    page.screenshot(path=str(screenshots / "run-zero-barrier.png"), full_page=True)
    ours = [t for f in figs for t in f["annotations"]] + [page.locator("#run-summary").inner_text()]
    assert not any(re.search(r"[-−]0(\.0+)?(?![.\d])", t) for t in ours), ours  # no negative zero in what Basin writes
    assert page.locator("#run-summary").inner_text().count("no barrier") == 2
    assert not page.js_errors, page.js_errors


#: pixels per unit along x and y of the first graph's plot area
SCALES = """() => { const g = document.querySelector('.run-graph .js-plotly-plot'); const L = g._fullLayout;
  const xr = L.xaxis.range, yr = L.yaxis.range;
  return [L.xaxis._length / Math.abs(xr[1] - xr[0]), L.yaxis._length / Math.abs(yr[1] - yr[0])]; }"""


def test_a_plane_is_drawn_with_equal_scales_and_can_fill_the_box(stack, store_family, page, screenshots):
    spec = {"path": {"type": "plane", "a": "ft_a", "b": "ft_b", "c": "ft_c", "resolution": [5, 5]},
            "dataset": store_family["data"], "metrics": ["loss"], "max_examples": 32}
    r = stack.request("POST", "/api/runs", json=spec)
    assert r.status_code == 201, r.text
    run_id = r.json()["id"]
    stack.wait_run(run_id)
    page.goto(stack.base_url + f"/runs/{run_id}")
    _wait_done(page, 25)
    page.wait_for_function(ANCHORED)
    assert page.locator("#run-equal").is_checked()
    px, py = page.evaluate(SCALES)
    assert px == pytest.approx(py, rel=0.02), "one unit of x and of y are drawn at different lengths"
    page.screenshot(path=str(screenshots / "run-plane-equal.png"), full_page=True)

    page.locator("#run-equal").uncheck()  # the fill-the-box view
    page.wait_for_function("() => { const g = document.querySelector('.run-graph .js-plotly-plot');"
                           " return g && g.layout && !g.layout.yaxis.scaleanchor; }")
    px2, py2 = page.evaluate(SCALES)
    assert px2 != pytest.approx(py2, rel=0.05)  # the grid is wider than tall: the box stretches it
    page.screenshot(path=str(screenshots / "run-plane-fill.png"), full_page=True)
    assert not page.js_errors, page.js_errors
