"""A path type is one module: a copy of ``linear.py`` under a new type name, dropped into
``basin/paths/`` with no other edit, works through every front door of the service —
``GET /api/meta``, API validation, the new-run form (rendered from the meta), a real
worker evaluating it, and the run page drawing it as a curve.

The stack is started inside :func:`tests.dropin.dropped_in_path`, so its API and worker
processes discover the module; it is removed again when the module's tests end.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.conftest import CURVE_POINTS
from tests.dropin import dropped_in_path
from tests.stack import running_stack

pytestmark = [pytest.mark.browser, pytest.mark.integration]


@pytest.fixture(scope="module")
def dropin(tmp_path_factory, classifier_family) -> Iterator[tuple]:
    with dropped_in_path("linear") as new_type:
        with running_stack(tmp_path_factory.mktemp("dropin") / "store", workers=1) as stack:
            ids = {}
            for name in ("ft_a", "ft_b"):
                r = stack.request("POST", "/api/checkpoints/register",
                                  json={"path": str(classifier_family[name]), "name": name})
                assert r.status_code in (200, 201), r.text
                ids[name] = r.json()["id"]
            r = stack.request("PUT", "/api/datasets?name=eval.csv",
                              content=classifier_family["data"].read_bytes())
            assert r.status_code in (200, 201), r.text
            ids["data"] = r.json()["id"]
            yield stack, new_type, ids


def test_the_api_lists_and_validates_a_dropped_in_path_type(dropin):
    stack, new_type, ids = dropin
    meta = stack.request("GET", "/api/meta").json()
    entry = next(p for p in meta["paths"] if p["type"] == new_type)
    assert entry["ndim"] == 1 and [f for f, _ in entry["slots"]] == ["a", "b"]
    spec = {"path": {"type": new_type, "a": "ft_a", "b": "ft_b", "points": 3}, "dataset": "eval.csv"}
    r = stack.request("POST", "/api/runs/validate", json=spec)
    assert r.status_code == 200, r.text
    assert r.json()["num_points"] == 3 and r.json()["spec"]["path"]["a"] == ids["ft_a"]


def test_the_form_offers_it_and_the_run_page_draws_it(dropin, page, screenshots):
    stack, new_type, ids = dropin
    page.goto(stack.base_url + "/")
    page.select_option("#newrun-type", new_type)
    page.locator("#newrun-row-1-label", has_text="Checkpoint A (α = 0)").wait_for()
    page.locator("#newrun-row-points").wait_for(state="visible")
    assert not page.locator("#newrun-row-res").is_visible()  # a 1D path: no grid fields
    page.select_option("#newrun-ckpt-1", ids["ft_a"])
    page.select_option("#newrun-ckpt-2", ids["ft_b"])
    page.select_option("#newrun-dataset", ids["data"])
    page.fill("#newrun-points", "5")
    page.fill("#newrun-max", "32")
    page.click("#newrun-run")
    page.wait_for_url("**/runs/*")
    run_id = page.url.rsplit("/", 1)[-1]
    page.locator("#run-status", has_text="done").wait_for(timeout=300_000)
    page.wait_for_function(f"({CURVE_POINTS})() === 5")
    page.screenshot(path=str(screenshots / "run-dropin-path.png"), full_page=True)
    doc = stack.request("GET", f"/api/runs/{run_id}").json()
    assert doc["spec"]["path"]["type"] == new_type and doc["status"] == "done"
    assert doc["summary"]["barrier"]["loss"]["value"] >= 0
    assert not page.js_errors, page.js_errors
