"""The Studies page in real headless Chromium (issue 26): a study of three tiny checkpoints —
two seeds and a copy of one with its FFN neurons permuted — is drawn live: queued with no
worker (every cell "…"), then, as a worker runs its pairs, the matrix fills in with a
verdict per cell, ordered by the clustering with its dendrogram, the clusters listed; a
cell opens that pair's run page. A screenshot is kept in test-artifacts/screenshots."""

from __future__ import annotations

import pytest

from service.store import Store
from tests.browser.conftest import hold_runs

pytestmark = pytest.mark.browser

CELLS = """() => { const g = document.querySelector('#study-matrix .js-plotly-plot');
  const t = g && g.data && g.data.find(d => d.meta === 'matrix'); if (!t) return null;
  return t.text.flat().filter(s => s !== ''); }"""
DENDRO = """() => { const g = document.querySelector('#study-matrix .js-plotly-plot');
  return g && g.data ? g.data.filter(d => d.meta === 'dendrogram').length : -1; }"""


def test_a_study_is_drawn_live_and_a_cell_opens_its_run(stack, study_family, page, screenshots):
    store = Store(stack.store)
    for name in ("seed_a", "seed_b", "permuted"):
        store.add_checkpoint_dir(study_family[name], name=name, tags={"family": "browser-study"})
    store.add_dataset(study_family["data"], name="study.csv")
    hold_runs(stack)  # no worker: the study's first run waits while its page opens
    try:
        r = stack.request(
            "POST",
            "/api/studies",
            json={
                "name": "three tiny checkpoints",
                "where": {"family": "browser-study"},
                "dataset": "study.csv",
                "max_examples": 256,
                "batch_size": 64,
            },
        )
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        page.goto(stack.base_url + f"/studies/{sid}")
        page.locator("#study-matrix").wait_for()
        page.wait_for_function(
            f"() => {{ const c = ({CELLS})(); return c && c.length === 6 && "
            "c.every(s => s === '…'); }"
        )
        assert page.locator("#study-count").inner_text().startswith("0 / 3 pairs")
        stack.start_worker()
        page.wait_for_function(
            "document.querySelector('#study-status').textContent === 'done'", timeout=600_000
        )  # a wait on the event; the limit only stops a hang
        page.wait_for_function(
            f"() => {{ const c = ({CELLS})(); return c && c.length === 6 && "
            "c.every(s => /[✓✗?]$/.test(s)); }"
        )
    finally:
        if not stack.live_worker_names:
            stack.start_worker()
    assert page.evaluate(DENDRO) == 2  # three leaves: two merges
    members = sorted(
        tuple(sorted(t.strip().split(", ")))
        for t in page.locator("#study-clusters .study-members").all_inner_texts()
    )
    assert members == [("permuted",), ("seed_a", "seed_b")]
    assert page.locator("#study-count").inner_text().startswith("3 / 3 pairs")
    assert "✗" in "".join(page.evaluate(CELLS))
    page.wait_for_function(
        "document.querySelector('#study-progress .progress-bar').style.width === '100%'"
    )
    page.screenshot(path=str(screenshots / "study-page.png"), full_page=True)
    # the accuracy barrier, offered once the pairs are in
    page.locator("#study-metric label", has_text="accuracy").click()
    page.wait_for_function(
        "() => { const g = document.querySelector('#study-matrix .js-plotly-plot');"
        " return g && g.layout.title.text.startsWith('accuracy barrier'); }"
    )
    page.locator("#study-metric label", has_text="loss").click()
    page.wait_for_function(
        "() => { const g = document.querySelector('#study-matrix .js-plotly-plot');"
        " return g && g.layout.title.text.startsWith('loss barrier'); }"
    )
    # a click on the cell of row 0, column 1 opens that pair's run
    target = page.evaluate("""() => { const g = document.querySelector('#study-matrix .js-plotly-plot');
      const t = g.data.find(d => d.meta === 'matrix'); const L = g._fullLayout; const b = g.getBoundingClientRect();
      return {x: b.left + L.xaxis2._offset + L.xaxis2.l2p(1), y: b.top + L.yaxis2._offset + L.yaxis2.l2p(0),
              run: t.customdata[0][1]}; }""")
    assert target["run"]
    page.mouse.click(target["x"], target["y"])
    page.wait_for_url(f"**/runs/{target['run']}")
    page.locator("#run-status").wait_for()
    assert not page.js_errors
