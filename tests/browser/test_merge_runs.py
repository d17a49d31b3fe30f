"""Merge methods from the new-run form, and methods compared on one figure, in real Chromium.

A TIES merge is set up in the form (base picker, the models multi-picker, its density
typed into the field the path type declares), run by the real worker, drawn over λ on its
run page; then the runs page overlays it with linear and SLERP runs on the same
checkpoints, each curve named by its method.
"""

from __future__ import annotations

import pytest

from tests.browser.conftest import CURVE_POINTS, pick_option

pytestmark = pytest.mark.browser

OVERLAY = """() => { const g = document.querySelector('#runs-overlay-graph .js-plotly-plot');
  return g && g.data ? g.data.filter(t => t.meta === 'curve').map(t => ({name: t.name, n: t.x.length})) : null; }"""
XTITLE = "() => document.querySelector('{sel} .js-plotly-plot').layout.xaxis.title.text"


def _param(field: str) -> str:
    """The form input of a path type's declared parameter (Dash's id for a dict: sorted keys)."""
    return f"""[id='{{"field":"{field}","type":"newrun-param"}}']"""


def _run(stack, path: dict, data: str) -> str:
    r = stack.request("POST", "/api/runs", json={"path": {**path, "points": 5}, "dataset": data,
                                                 "metrics": ["loss", "accuracy"], "max_examples": 32})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_a_ties_merge_from_the_form_then_linear_slerp_ties_overlaid(stack, store_family, page, screenshots):
    ids = store_family
    others = [_run(stack, {"type": t, "a": ids["ft_a"], "b": ids["ft_b"]}, ids["data"]) for t in ("linear", "slerp")]

    page.goto(stack.base_url + "/")
    page.select_option("#newrun-type", "ties")
    page.locator("#newrun-row-1-label", has_text="Base θ0").wait_for()
    page.locator("#newrun-row-traj-label", has_text="Fine-tuned models").wait_for()
    assert not page.locator("#newrun-row-2").is_visible()  # one checkpoint slot; the models are a list
    page.locator("#newrun-row-range-label", has_text="λ range").wait_for()
    density = page.locator(_param("density"))
    density.wait_for()
    assert density.input_value() == "0.2"  # the declared default
    page.select_option("#newrun-ckpt-1", ids["init"])
    pick_option(page, "newrun-traj", "ft_a", start=True)
    pick_option(page, "newrun-traj", "ft_b", start=True)
    density.fill("0.3")
    page.locator(_param("weights")).fill("1, 0.5")
    page.select_option("#newrun-dataset", ids["data"])
    page.fill("#newrun-points", "5")
    page.fill("#newrun-max", "32")
    page.click("#newrun-check")
    page.locator("#newrun-result", has_text="OK — 5 points").wait_for()
    page.click("#newrun-run")
    page.wait_for_url("**/runs/*")
    ties_id = page.url.rsplit("/", 1)[-1]
    page.locator("#run-status", has_text="done").wait_for(timeout=300_000)
    page.wait_for_function(f"({CURVE_POINTS})() === 5")
    assert page.evaluate(XTITLE.replace("{sel}", ".run-graph")) == "λ"
    page.screenshot(path=str(screenshots / "run-ties.png"), full_page=True)
    doc = stack.request("GET", f"/api/runs/{ties_id}").json()
    path = doc["spec"]["path"]
    assert path["type"] == "ties" and path["density"] == 0.3 and path["weights"] == [1.0, 0.5]
    assert path["base"] == ids["init"] and path["models"] == [ids["ft_a"], ids["ft_b"]]
    assert doc["summary"]["barrier"]["loss"]["value"] >= 0

    for run_id in others:
        assert stack.wait_run(run_id)["status"] == "done"
    page.goto(stack.base_url + "/runs")
    page.locator(f"#runs-list tr[data-id='{ties_id}'] .runs-ckpts", has_text="init + ft_a + ft_b").wait_for()
    for method in ("linear", "slerp", "ties"):
        pick_option(page, "runs-overlay", f"· {method} ·")
    page.wait_for_function(f"({OVERLAY})() && ({OVERLAY})().length === 3")
    curves = page.evaluate(OVERLAY)
    assert sorted((c["name"], c["n"]) for c in curves) == [
        ("linear: ft_a → ft_b", 5), ("slerp: ft_a → ft_b", 5), ("ties: init + ft_a + ft_b", 5)]
    assert page.evaluate(XTITLE.replace("{sel}", "#runs-overlay-graph")) == "α / t / λ"
    page.screenshot(path=str(screenshots / "runs-overlay-methods.png"), full_page=True)
    assert not page.js_errors, page.js_errors
