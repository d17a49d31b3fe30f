"""A curve fit from the dashboard, in real headless Chromium: a finished straight-line run's
"Fit a curve" button queues a fit and opens its page; the training-loss chart fills in as the
worker trains; when it is done the page overlays the line and the fitted curve. A straight-line run whose
endpoints a fit joined shows the fitted curve overlaid on its own page (with both barriers in
words), and the Fits page lists the fit with its results."""

from __future__ import annotations

import time

import pytest

from service.store import Store
from tests import factories
from tests.browser.conftest import hold_runs

pytestmark = pytest.mark.browser

LOSS_POINTS = """() => { const g = document.querySelector('#fit-loss .js-plotly-plot');
  return g && g.data ? g.data[0].x.length : -1; }"""
FITTED_CURVES = """() => { const g = document.querySelector('#run-fitted-overlay .js-plotly-plot');
  return g && g.data ? g.data.filter(d => d.meta === 'curve').length : -1; }"""
OVERLAY_CURVES = """() => { const g = document.querySelector('#fit-overlay .js-plotly-plot');
  return g && g.data ? g.data.filter(d => d.meta === 'curve').length : -1; }"""


@pytest.fixture(scope="module")
def fit_pair(stack, tmp_path_factory) -> None:
    """Two tiny BERTs from different inits (a real line barrier) and a dataset, in the stack's store."""
    root = tmp_path_factory.mktemp("browser-fit")
    tok = factories.make_tokenizer("bert")
    store = Store(stack.store)
    for name, seed in (("bfit_a", 10), ("bfit_b", 11)):
        m = factories.init_classifier(seed, num_hidden_layers=2)
        factories.finetune_classifier(m, seed, steps=60, lr=5e-3)
        store.add_checkpoint_dir(factories.save(m, root / name, tok), name=name)
    store.add_dataset(factories.write_classification_dataset(root / "d.csv", n=64, seed=5), name="bfit.csv")
    # a training split beside an evaluation set, found by name (bfit-eval.csv → bfit-train.csv)
    store.add_dataset(factories.write_classification_dataset(root / "e.csv", n=32, seed=6), name="bfit-eval.csv")
    store.add_dataset(factories.write_classification_dataset(root / "t.csv", n=64, seed=7), name="bfit-train.csv")


def test_fit_a_curve_from_a_line_run_shows_its_loss_live_then_the_overlay(stack, fit_pair, page):
    spec = {"path": {"type": "linear", "a": "bfit_a", "b": "bfit_b", "points": 5}, "dataset": "bfit-eval.csv",
            "max_examples": 32, "batch_size": 16}
    run_id = stack.request("POST", "/api/runs", json=spec).json()["id"]
    assert stack.wait_run(run_id)["status"] == "done"
    hold_runs(stack)  # no worker: the fit waits in the queue while its page opens
    try:
        page.goto(stack.base_url + f"/runs/{run_id}")
        page.click("#run-fit")
        # the dialog: training data defaults to the train split beside the run's dataset
        page.locator("#run-fit-dialog").wait_for()
        page.locator("#run-fit-train", has_text="bfit-train.csv").wait_for()
        assert page.locator("#run-fit-bends").is_disabled()  # a Bezier curve has no bends
        page.click("#run-fit-start")
        page.wait_for_url("**/fits/*")
        page.locator("#fit-loss").wait_for()
        page.wait_for_function(f"({LOSS_POINTS})() === 0")  # queued: an empty chart
        assert page.locator("#fit-status").inner_text() == "queued"
        stack.start_worker()
        fit_id = page.url.rsplit("/", 1)[-1]
        try:
            page.wait_for_function(f"({LOSS_POINTS})() === 100", timeout=600_000)  # a wait on the event; the limit only stops a hang
        except Exception:
            body = stack.request("GET", f"/api/fits/{fit_id}").json()
            raise AssertionError((body.get("status"), body.get("error"), len(body.get("losses") or []),
                                  page.evaluate(LOSS_POINTS), stack.log("api")[-2000:])) from None
        page.wait_for_function(f"({OVERLAY_CURVES})() === 2", timeout=600_000)  # a wait on the event; the limit only stops a hang
    finally:
        if not stack.live_worker_names:
            stack.start_worker()
    assert page.locator("#fit-status").inner_text() == "done"
    assert page.locator("#fit-line-link").get_attribute("href").startswith("/runs/")
    assert page.locator("#fit-curve-link").get_attribute("href").startswith("/runs/")
    assert not page.js_errors


def test_a_line_runs_page_shows_the_fitted_curve_and_the_fits_page_lists_it(stack, fit_pair, page):
    """A fit made through the API (waited for there): a user arriving at the straight-line run
    sees the fitted curve overlaid with both barriers in words, and finds the fit on the Fits
    page (from the Runs page's link)."""
    spec = {"path": {"type": "linear", "a": "bfit_a", "b": "bfit_b", "points": 5}, "dataset": "bfit.csv",
            "max_examples": 32, "batch_size": 16, "seed": 3}
    run_id = stack.request("POST", "/api/runs", json=spec).json()["id"]
    assert stack.wait_run(run_id)["status"] == "done"
    # trained on the 32 rows this run does not evaluate (holdout), evaluated on its 32
    body = {"a": "bfit_a", "b": "bfit_b", "dataset": "bfit.csv", "holdout": True, "max_examples": 64,
            "eval_max_examples": 32, "eval_points": 5, "batch_size": 16, "seed": 3, "steps": 60, "lr": 1e-2}
    fit_id = stack.request("POST", "/api/fits", json=body).json()["id"]
    fit = stack.request("GET", f"/api/fits/{fit_id}").json()
    while fit["status"] not in ("done", "failed", "cancelled"):  # polls the worker's event
        time.sleep(0.2)
        fit = stack.request("GET", f"/api/fits/{fit_id}").json()
    assert fit["status"] == "done", fit
    for r in fit["runs"].values():
        assert stack.wait_run(r, timeout=900)["status"] == "done"

    page.goto(stack.base_url + f"/runs/{run_id}")
    page.locator("#run-fitted-card").wait_for()
    page.wait_for_function(f"({FITTED_CURVES})() === 2")
    assert page.locator("#run-fitted-fit-link").get_attribute("href") == f"/fits/{fit_id}"
    assert page.locator("#run-fitted-curve-link").get_attribute("href") == f"/runs/{fit['runs']['curve']}"
    line_words = page.locator("#run-fitted-line-barrier").inner_text()
    curve_words = page.locator("#run-fitted-curve-barrier").inner_text()
    assert line_words.startswith("straight line: barrier") and "linearly connected" in line_words
    assert curve_words.startswith("fitted bezier: ") and "connected along this curve" in curve_words
    assert "linearly" not in curve_words
    assert page.locator("#run-fitted-note").count() == 0  # the fit evaluated this run's own data

    page.goto(stack.base_url + "/runs")
    page.click("#runs-fits-link")
    page.wait_for_url("**/fits")
    row = page.locator(f"#fits-list tr[data-id='{fit_id}']")
    row.wait_for()
    assert row.locator(".fits-status .badge").inner_text() == "done"
    assert row.locator(".fits-ends").inner_text() == "bfit_a → bfit_b"
    assert row.locator(".fits-curve-type").inner_text() == "bezier"
    assert row.locator(".fits-loss").inner_text() == f"{fit['final_loss']:.4g}"
    assert row.locator("a.fits-curve").get_attribute("href") == f"/runs/{fit['runs']['curve']}"
    row.locator("a.fits-link").click()
    page.wait_for_url(f"**/fits/{fit_id}")
    assert not page.js_errors
