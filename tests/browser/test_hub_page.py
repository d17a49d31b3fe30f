"""The checkpoints page fetches a checkpoint by Hugging Face Hub id and shows the download
as it goes, in real Chromium over the real stack; the Hub is a local endpoint
(:mod:`tests.hubserver`, the worker's ``HF_ENDPOINT``). The weights' download is held at
the endpoint (an event, not a clock) so the page is seen mid-way, then let through."""

from __future__ import annotations

import threading

import pytest

from tests.hubserver import HubServer
from tests.stack import running_stack

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def hub(classifier_family):
    with HubServer() as server:
        server.add("org/tiny-bert", classifier_family["ft_a"])
        server.add("org/old-bert", files={"config.json": (classifier_family["ft_a"] / "config.json").read_bytes(),
                                          "pytorch_model.bin": b"\x80\x04N."})
        yield server


@pytest.fixture(scope="module")
def hub_ui_stack(hub, tmp_path_factory):
    root = tmp_path_factory.mktemp("hub-ui") / "store"
    with running_stack(root, workers=1, env={"HF_ENDPOINT": hub.url}) as s:
        yield s


def test_fetch_by_hub_id_shows_progress_then_the_pinned_checkpoint(hub_ui_stack, hub, page, screenshots):
    arrived, release = threading.Event(), threading.Event()

    def hold_weights(path: str) -> None:
        if path.endswith("model.safetensors"):
            arrived.set()
            release.wait(120)

    hub.on_download = hold_weights
    page.goto(hub_ui_stack.base_url + "/checkpoints")
    page.fill("#ckpt-hub-ref", "org/tiny-bert@main")
    page.click("#ckpt-hub-button")
    try:
        assert arrived.wait(120), hub_ui_stack.log("worker0")
        # the config and tokenizer files are in, the weights are held: the page says so
        page.locator("#ckpt-hub-status", has_text="downloading").wait_for()
        text = page.locator("#ckpt-hub-status").inner_text()
        assert "org/tiny-bert@main: downloading" in text and "checked against the Hub's hash" in text
        page.screenshot(path=str(screenshots / "hub-fetch-progress.png"), full_page=True)
    finally:
        release.set()
        hub.on_download = None
    commit = hub.repos["org/tiny-bert"].commit
    done = page.locator("#ckpt-hub-done")
    done.wait_for()
    assert f"Stored tiny-bert@{commit[:8]}" in done.inner_text() and commit[:12] in done.inner_text()
    row = page.locator("#ckpt-table tr", has_text=f"tiny-bert@{commit[:8]}")
    row.wait_for()
    assert row.locator(".ckpt-tags").inner_text() == f"hub=org/tiny-bert@main ({commit[:12]})"
    assert "hub" in row.inner_text()
    page.screenshot(path=str(screenshots / "hub-fetch-done.png"), full_page=True)

    # a repository with only a pickle: the refusal says why and what to do
    page.fill("#ckpt-hub-ref", "org/old-bert")
    page.click("#ckpt-hub-button")
    err = page.locator("#ckpt-hub-error")
    err.wait_for()
    assert "only pytorch_model.bin (a pickle)" in err.inner_text() and "allow_bin" in err.inner_text()
    page.screenshot(path=str(screenshots / "hub-fetch-refused.png"), full_page=True)
    assert not page.js_errors
