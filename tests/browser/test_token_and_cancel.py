"""The dashboard against a server with ``BASIN_API_TOKEN`` set, and the cancel button
through the API's CSRF guard, in real headless Chromium.

A user without the token is told the server needs it to list runs, yet opens a run from
its link; once the token is entered in the navbar the list appears and cancel works.
The cancel button's ``fetch`` carries ``X-Basin-Token`` (empty without a token), or the
CSRF guard would refuse its body-less POST.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.browser.conftest import hold_runs

pytestmark = pytest.mark.browser

TOKEN = "browser-s3cret"


@pytest.fixture(scope="module")
def token_stack(tmp_path_factory, classifier_family) -> Iterator:
    """A stack with a token and no worker (runs stay queued), holding ft_a, ft_b, eval.csv."""
    from tests.stack import running_stack

    with running_stack(tmp_path_factory.mktemp("token") / "store", workers=0, token=TOKEN) as s:
        for name in ("ft_a", "ft_b"):
            r = s.request("POST", "/api/checkpoints/register",
                          json={"path": str(classifier_family[name]), "name": name, "tags": {}})
            assert r.status_code in (200, 201), r.text
        r = s.request("PUT", "/api/datasets?name=eval.csv",
                      content=classifier_family["data"].read_bytes())
        assert r.status_code in (200, 201), r.text
        yield s


def _spec() -> dict:
    return {"path": {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 3},
            "dataset": "eval.csv", "max_examples": 8}


def test_with_a_token_the_pages_ask_for_it_and_a_run_link_opens_without(
        token_stack, page, new_context, screenshots):
    run_id = token_stack.request("POST", "/api/runs", json=_spec()).json()["id"]

    page.goto(token_stack.base_url + "/runs")
    alert = page.locator("#runs-needs-token")
    alert.wait_for()
    assert "This server needs the API token to list runs" in alert.inner_text()
    page.fill("#settings-token-input", TOKEN)
    page.press("#settings-token-input", "Enter")
    page.locator(f"#runs-list tr[data-id='{run_id}']").wait_for()
    assert page.locator("#runs-needs-token").count() == 0

    page.goto(token_stack.base_url + "/checkpoints")  # the token stays entered (local storage)
    page.locator("#ckpt-table").wait_for()
    assert page.locator("#ckpt-table .ckpt-name").all_inner_texts() == ["ft_b", "ft_a"]
    page.goto(token_stack.base_url + "/")
    page.wait_for_function("document.querySelectorAll('#newrun-ckpt-1 option').length >= 2")
    page.screenshot(path=str(screenshots / "token-new-run.png"), full_page=True)

    # a fresh browser, no token: the run's link opens the run; cancel is refused, saying why
    other = new_context().new_page()
    other.goto(token_stack.base_url + f"/runs/{run_id}")
    other.locator("#run-graphs").wait_for()
    assert other.locator("#run-status").inner_text().strip() == "queued"
    other.click("#run-cancel")
    msg = other.locator("#run-cancel-msg")
    other.wait_for_function("document.querySelector('#run-cancel-msg').textContent.length > 0")
    assert "Cancel failed" in msg.inner_text() and "API token" in msg.inner_text()

    # with the token entered, the same button cancels the run
    page.goto(token_stack.base_url + f"/runs/{run_id}")
    page.locator("#run-graphs").wait_for()
    page.click("#run-cancel")
    page.wait_for_function("document.querySelector('#run-cancel-msg').textContent.length > 0")
    assert page.locator("#run-cancel-msg").inner_text() == "Cancel requested."
    assert token_stack.request("GET", f"/api/runs/{run_id}").json()["status"] == "cancelled"
    assert not page.js_errors, page.js_errors


def test_the_cancel_button_passes_the_csrf_guard_without_a_token(stack, store_family, page):
    hold_runs(stack)  # no worker: the run stays queued until cancelled
    try:
        spec = {**_spec(), "path": {**_spec()["path"], "a": store_family["ft_a"],
                                    "b": store_family["ft_b"]}, "dataset": store_family["data"]}
        run_id = stack.request("POST", "/api/runs", json=spec).json()["id"]
        page.goto(stack.base_url + f"/runs/{run_id}")
        page.locator("#run-graphs").wait_for()
        page.click("#run-cancel")
        page.wait_for_function("document.querySelector('#run-cancel-msg').textContent.length > 0")
        assert page.locator("#run-cancel-msg").inner_text() == "Cancel requested."
        assert stack.request("GET", f"/api/runs/{run_id}").json()["status"] == "cancelled"
    finally:
        if not stack.live_worker_names:
            stack.start_worker()
