"""Browser-test fixtures: the real stack (Redis, Celery worker, uvicorn + Dash) and headless Chromium."""

from __future__ import annotations

import os
import re
import time
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

    root = tmp_path_factory.mktemp("browser")
    # the seam lets a test hold the worker at an exact point of a run (``let_through``)
    with running_stack(root / "store", workers=1, seam=root / "seam") as s:
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


def release_runs(stack, page, run_id: str | None = None) -> None:
    """Once the run page is up and says no worker is alive, start a worker. With ``run_id``,
    the worker is held at each point of that run until :func:`let_through` lets it go."""
    page.wait_for_function(
        "document.querySelector('#run-extra').textContent.includes('no worker')", timeout=15_000)
    if run_id is not None:
        stack.seam.hold(run_id)
    stack.start_worker()


def let_through(stack, page, run_id: str, k: int, shown: str, *, release: bool = True) -> None:
    """Let the worker evaluate points of ``run_id`` one by one up to ``k`` in all, hold it at the next one and
    wait until the page shows exactly ``k`` points (``shown``: JS returning the count it draws);
    then release the rest of the run (``release=False``: the caller does, with
    ``stack.seam.release(run_id)``). The run grows live in front of the test by events, not
    by racing the page's poll against this machine's speed. Needs ``release_runs(.., run_id)``."""
    released = [t for t, _ in stack.seam.arrived(run_id)  # let through by an earlier call
                if t.isdigit() and (stack.seam.dir / f"release-{run_id}-{t}").exists()]
    while True:
        new = [t for t, _ in stack.seam.arrived(run_id) if t.isdigit() and t not in released]
        if not new:
            if not any(w is not None and w.poll() is None for w in stack.workers):
                raise AssertionError(f"no live worker reached a point of {run_id}\n{stack.log('worker0')}")
            time.sleep(0.02)
            continue
        if len(released) == k:  # held at point k + 1: exactly k points are recorded
            break
        stack.seam.release(run_id, new[0])
        released.append(new[0])
    try:
        page.wait_for_function(f"({shown})() === {k}", timeout=120_000)
    except BaseException:
        stack.seam.release(run_id)
        raise
    if release:
        stack.seam.release(run_id)


def pick_option(page, dropdown: str, label: str, *, start: bool = False) -> None:
    """Choose the first option containing ``label`` in a Dash 4 ``dcc.Dropdown`` (a popover
    of option rows); with ``start``, the first one that *begins* with it, so a checkpoint's
    name does not pick an option that merely mentions it ("lora adapter on ft_a")."""
    page.click(f"#{dropdown}")
    text = re.compile(rf"^\s*{re.escape(label)}\b") if start else label
    page.locator(".dash-dropdown-option", has_text=text).first.click()
    page.keyboard.press("Escape")
