"""Browser-test fixtures: the real stack (Redis, Celery worker, uvicorn + Dash) and headless Chromium."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
#: JS: how many points the first run graph's curve draws (-1 before it is drawn).
CURVE_POINTS = """() => { const g = document.querySelector('.run-graph .js-plotly-plot');
  const t = g && g.data && g.data.find(d => d.meta === 'curve'); return t ? t.x.length : -1; }"""
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def pytest_collection_modifyitems(items):
    if not os.path.exists(CHROMIUM):
        skip = pytest.mark.skip(reason=f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
        for item in items:
            if "browser" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Iterator:
    """The real stack, one worker, over a fresh store."""
    from tests.stack import running_stack

    with running_stack(tmp_path_factory.mktemp("browser") / "store", workers=1) as s:
        yield s


@pytest.fixture(scope="session")
def playwright_instance():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        yield p


@pytest.fixture
def new_context(playwright_instance, tmp_path):
    """Factory: a fresh persistent Chromium profile (a separate "browser") per call."""
    contexts = []

    def make():
        profile = tmp_path / f"profile{len(contexts)}"
        ctx = playwright_instance.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, args=ARGS, viewport={"width": 1400, "height": 1000})
        ctx.set_default_timeout(30_000)
        contexts.append(ctx)
        return ctx

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture
def page(new_context):
    ctx = new_context()
    pg = ctx.pages[0] if ctx.pages else ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.js_errors = errors  # type: ignore[attr-defined]
    return pg


@pytest.fixture(scope="session")
def screenshots() -> Path:
    d = ARTIFACTS / "screenshots"
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.fixture(scope="session")
def store_family(stack, classifier_family, tmp_path_factory) -> dict:
    """The tiny BERT family registered in the stack's store, plus a slow-to-evaluate dataset."""
    from tests import factories

    ids: dict[str, str] = {}
    for name in ("init", "ft_a", "ft_b", "ft_c"):
        r = stack.request("POST", "/api/checkpoints/register",
                          json={"path": str(classifier_family[name]), "name": name, "tags": {}})
        assert r.status_code in (200, 201), r.text
        ids[name] = r.json()["id"]
    root = tmp_path_factory.mktemp("browser-data")
    small = classifier_family["data"]
    big = factories.write_classification_dataset(root / "big.csv", n=1500, seed=5)  # slow enough to watch
    for key, path, name in (("data", small, "eval.csv"), ("big", big, "big.csv")):
        r = stack.request("PUT", f"/api/datasets?name={name}", content=path.read_bytes())
        assert r.status_code in (200, 201), r.text
        ids[key] = r.json()["id"]
    return ids


def hold_runs(stack) -> None:
    """Kill the stack's workers: a run created now waits in the queue, so a test can watch it
    fill in from its first point however fast this machine evaluates. ``release_runs`` ends it."""
    for i, name in enumerate(stack.worker_names):
        if name in stack.live_worker_names:
            stack.kill_worker(i)


def release_runs(stack, page) -> None:
    """Once the run page is up and says no worker is alive, start a worker."""
    page.wait_for_function(
        "document.querySelector('#run-extra').textContent.includes('no worker')", timeout=15_000)
    stack.start_worker()


def pick_option(page, dropdown: str, label: str, *, start: bool = False) -> None:
    """Choose the first option containing ``label`` in a Dash 4 ``dcc.Dropdown`` (a popover
    of option rows); with ``start``, the first one that *begins* with it, so a checkpoint's
    name does not pick an option that merely mentions it ("lora adapter on ft_a")."""
    page.click(f"#{dropdown}")
    text = re.compile(rf"^\s*{re.escape(label)}\b") if start else label
    page.locator(".dash-dropdown-option", has_text=text).first.click()
    page.keyboard.press("Escape")
