"""The list pages (runs, datasets, checkpoints) and the run page's details, in real Chromium
against the real stack: what a user clicks and what they must then see."""

from __future__ import annotations

import re

import pytest
import yaml

from tests import factories
from tests.browser.conftest import CURVE_POINTS, pick_option

pytestmark = pytest.mark.browser

HEX_ID = re.compile(r"\b[0-9a-f]{40,64}\b")
OVERLAY = """() => { const g = document.querySelector('#runs-overlay-graph .js-plotly-plot');
  return g && g.data ? g.data.filter(t => t.meta === 'curve').map(t => ({name: t.name, n: t.x.length})) : null; }"""


def _linear(stack, a: str, b: str, data: str, points: int = 5) -> str:
    spec = {"path": {"type": "linear", "a": a, "b": b, "points": points}, "dataset": data,
            "metrics": ["loss", "accuracy"], "max_examples": 32}
    r = stack.request("POST", "/api/runs", json=spec)
    assert r.status_code == 201, r.text
    return r.json()["id"]


@pytest.fixture(scope="module")
def two_runs(stack, store_family) -> dict[str, str]:
    """Two finished linear runs: ft_a → ft_b and ft_a → ft_c."""
    ids = {"ab": _linear(stack, "ft_a", "ft_b", store_family["data"]),
           "ac": _linear(stack, "ft_a", "ft_c", store_family["data"], points=7)}
    for run_id in ids.values():
        assert stack.wait_run(run_id)["status"] == "done"
    return ids


def test_runs_page_lists_names_filters_and_overlays(stack, store_family, two_runs, page, screenshots):
    page.goto(stack.base_url + "/runs")
    row_ab = page.locator(f"#runs-list tr[data-id='{two_runs['ab']}']")
    row_ac = page.locator(f"#runs-list tr[data-id='{two_runs['ac']}']")
    row_ab.wait_for()
    assert row_ab.locator(".runs-type").inner_text() == "linear"
    assert row_ab.locator(".runs-ckpts").inner_text() == "ft_a → ft_b"
    assert row_ac.locator(".runs-ckpts").inner_text() == "ft_a → ft_c"
    assert row_ab.locator(".runs-status").inner_text() == "done"
    assert row_ab.locator(".runs-dataset").inner_text() == "eval.csv"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", row_ab.locator(".runs-created").inner_text())
    assert not HEX_ID.search(page.locator("#runs-list").inner_text()), "a sha id is shown instead of a name"
    page.screenshot(path=str(screenshots / "runs.png"), full_page=True)

    # filter by a checkpoint only one of the two runs uses
    page.select_option("#runs-filter", store_family["ft_c"])
    row_ab.wait_for(state="detached")
    assert row_ac.is_visible()
    for ckpts in page.locator("#runs-list .runs-ckpts").all_inner_texts():
        assert "ft_c" in ckpts
    page.select_option("#runs-filter", "*")
    row_ab.wait_for()

    # overlay both finished runs: one curve each, with all their points, named by checkpoints
    pick_option(page, "runs-overlay", "ft_a → ft_b")
    page.wait_for_function(f"({OVERLAY})() && ({OVERLAY})().length === 1")
    pick_option(page, "runs-overlay", "ft_a → ft_c")
    page.wait_for_function(f"({OVERLAY})() && ({OVERLAY})().length === 2")
    curves = page.evaluate(OVERLAY)
    assert sorted((c["name"], c["n"]) for c in curves) == [("ft_a → ft_b", 5), ("ft_a → ft_c", 7)]
    page.select_option("#runs-overlay-metric", "accuracy")
    page.wait_for_function(
        "document.querySelector('#runs-overlay-graph .js-plotly-plot').layout.yaxis.title.text"
        " === 'accuracy (%)'")
    page.screenshot(path=str(screenshots / "runs-overlay.png"), full_page=True)
    assert not page.js_errors, page.js_errors


def test_datasets_page_upload_preview_and_refusal(stack, page, tmp_path, screenshots):
    good = factories.write_classification_dataset(tmp_path / "tweets-small.csv", n=12, seed=77)
    first = good.read_text().splitlines()[1].rsplit(",", 1)
    page.goto(stack.base_url + "/datasets")
    page.set_input_files("#data-upload-file", str(good))
    page.fill("#data-upload-name", "tweets-small")
    page.click("#data-upload-button")
    status = page.locator("#data-upload-status")
    status.filter(has_text="Uploaded").wait_for()
    row = page.locator("#data-table tr", has_text="tweets-small.csv")
    row.wait_for()
    assert "12" in row.inner_text() and "classification" in row.inner_text()
    # the preview shows its first rows, in file order
    page.locator("#data-preview-table").wait_for()
    assert page.locator("#data-preview-title").inner_text().startswith("tweets-small.csv")
    cells = page.locator("#data-preview-table tbody tr").first.locator("td").all_inner_texts()
    assert cells == [first[0], first[1]]
    assert page.locator("#data-preview-table tbody tr").count() == 10
    page.screenshot(path=str(screenshots / "datasets.png"), full_page=True)

    # a table without the needed columns: the API's reason on the upload row, nothing listed
    bad = tmp_path / "no-columns.csv"
    bad.write_text("foo,bar\n1,2\n3,4\n")
    page.set_input_files("#data-upload-file", str(bad))
    page.fill("#data-upload-name", "no-columns")
    page.click("#data-upload-button")
    status.filter(has_text="Upload failed").wait_for()
    text = status.inner_text()
    assert "foo" in text and "text" in text, text  # names what it found and what it needs
    assert status.get_attribute("data-state") == "danger"
    names = [d["name"] for d in stack.request("GET", "/api/datasets").json()]
    assert not any(n.startswith("no-columns") for n in names)
    assert not page.js_errors, page.js_errors


def test_checkpoints_page_register_tag_delete(stack, page, tmp_path, screenshots):
    folder = factories.save(factories.init_classifier(11), tmp_path / "seed11", factories.make_tokenizer("bert"))
    page.goto(stack.base_url + "/checkpoints")
    page.fill("#ckpt-register-path", str(folder))
    page.fill("#ckpt-register-name", "seed11")
    page.click("#ckpt-register-button")
    page.locator("#ckpt-register-status", has_text="Registered seed11").wait_for()
    row = page.locator("#ckpt-table tr", has_text="seed11")
    row.wait_for()
    ckpt_id = row.get_attribute("data-id")
    assert ckpt_id and "BertForSequenceClassification" in row.inner_text()

    # tag it: task / seed / step show in the list (and the API has them, typed)
    page.select_option("#ckpt-edit-id", ckpt_id)
    page.wait_for_function("document.querySelector('#ckpt-edit-name').value === 'seed11'")  # form filled in
    page.fill("#ckpt-edit-task", "sentiment")
    page.fill("#ckpt-edit-seed", "11")
    page.fill("#ckpt-edit-step", "300")
    page.click("#ckpt-edit-save")
    page.locator("#ckpt-edit-status", has_text="Saved").wait_for()
    row.locator(".ckpt-tags", has_text="step=300").wait_for()
    assert row.locator(".ckpt-tags").inner_text() == "task=sentiment, seed=11, step=300"
    tags = stack.request("GET", f"/api/checkpoints/{ckpt_id}").json()["tags"]
    assert tags["seed"] == 11 and tags["step"] == 300 and tags["task"] == "sentiment"
    page.screenshot(path=str(screenshots / "checkpoints.png"), full_page=True)

    # a folder that is not a model: the API's reason, nothing added
    before = len(stack.request("GET", "/api/checkpoints").json())
    page.fill("#ckpt-register-path", str(tmp_path / "nope"))
    page.fill("#ckpt-register-name", "nope")
    page.click("#ckpt-register-button")
    page.locator("#ckpt-register-status", has_text="Register failed").wait_for()
    assert len(stack.request("GET", "/api/checkpoints").json()) == before

    # delete (after the browser's confirm dialog): gone from the list and the API
    page.once("dialog", lambda d: d.accept())
    page.select_option("#ckpt-edit-id", ckpt_id)
    page.click("#ckpt-delete")
    page.locator("#ckpt-edit-status", has_text="Deleted").wait_for()
    page.locator(f"#ckpt-table tr[data-id='{ckpt_id}']").wait_for(state="detached")
    assert stack.request("GET", f"/api/checkpoints/{ckpt_id}").status_code in (404, 422)
    assert not page.js_errors, page.js_errors


def test_finished_run_shows_full_still_progress_and_named_spec(stack, store_family, page, screenshots):
    run_id = _linear(stack, "ft_a", "ft_b", store_family["data"], points=9)
    page.goto(stack.base_url + f"/runs/{run_id}")  # opened while queued / running: watch it finish
    page.locator("#run-status", has_text="done").wait_for(timeout=300_000)
    bar = page.locator("#run-progress .progress-bar")
    page.wait_for_function("!document.querySelector('#run-progress .progress-bar')"
                           ".classList.contains('progress-bar-animated')")
    classes = bar.get_attribute("class")
    assert "progress-bar-striped" not in classes and "progress-bar-animated" not in classes, classes
    assert bar.get_attribute("aria-valuenow") == "100" and bar.inner_text() == "9 / 9"
    full = """() => { const b = document.querySelector('#run-progress .progress-bar');
      return Math.abs(b.getBoundingClientRect().width - b.parentElement.getBoundingClientRect().width) < 1; }"""
    page.wait_for_function(full)  # after Bootstrap's .6 s width transition (a busy machine: longer)
    # the spec keeps the ids (reproducible) with the names beside them
    spec = page.locator("#run-spec").inner_text()
    assert f"a: {store_family['ft_a']}  # ft_a" in spec, spec
    assert f"b: {store_family['ft_b']}  # ft_b" in spec, spec
    assert f"dataset: {store_family['data']}  # eval.csv" in spec, spec
    page.wait_for_function(f"({CURVE_POINTS})() === 9")
    page.screenshot(path=str(screenshots / "run-done.png"), full_page=True)
    # reloaded after the run: the same still, full bar
    page.reload()
    page.locator("#run-status", has_text="done").wait_for()
    classes = page.locator("#run-progress .progress-bar").get_attribute("class")
    assert "progress-bar-animated" not in classes and "progress-bar-striped" not in classes
    assert page.locator("#run-progress .progress-bar").get_attribute("aria-valuenow") == "100"
    page.wait_for_function(full)
    assert not page.js_errors, page.js_errors


def test_trajectory_form_basis_pca_or_three_checkpoints(stack, store_family, page, screenshots):
    page.goto(stack.base_url + "/")
    page.select_option("#newrun-type", "trajectory")
    page.locator("#newrun-row-basis").wait_for(state="visible")
    for name in ("ft_a", "ft_b", "ft_c"):
        pick_option(page, "newrun-traj", name, start=True)
    page.select_option("#newrun-dataset", store_family["data"])
    page.fill("#newrun-nx", "5")
    page.fill("#newrun-ny", "5")
    # default basis: PCA
    page.click("#newrun-copy")
    page.locator("#newrun-yaml", has_text="basis: pca").wait_for()
    assert not page.locator("#newrun-basis-1").is_visible()
    # the plane through three chosen checkpoints
    page.get_by_text("through three checkpoints").click()
    page.locator("#newrun-basis-1").wait_for(state="visible")
    for k, name in ((1, "init"), (2, "ft_a"), (3, "ft_b")):
        page.select_option(f"#newrun-basis-{k}", store_family[name])
    page.click("#newrun-check")
    page.locator("#newrun-result", has_text="OK").wait_for()
    assert "25 points" in page.locator("#newrun-result").inner_text()
    text = page.locator("#newrun-yaml").inner_text()
    basis = yaml.safe_load(text)["path"]["basis"]
    assert basis == [store_family["init"], store_family["ft_a"], store_family["ft_b"]], text
    assert f"- {store_family['init']}  # init" in text  # names beside the ids
    page.screenshot(path=str(screenshots / "new-run-trajectory.png"), full_page=True)
    # back to PCA: the pickers hide and the spec says pca again
    page.get_by_text("PCA of the trajectory").click()
    page.locator("#newrun-basis-1").wait_for(state="hidden")
    page.click("#newrun-copy")
    page.locator("#newrun-yaml", has_text="basis: pca").wait_for()
    assert not page.js_errors, page.js_errors
