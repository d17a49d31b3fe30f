"""Issue 9, dashboard side, in real Chromium against the real stack: output ensembling drawn
beside weight interpolation and the sample viewer, both growing live as points arrive.

The run's points are written here, as a worker records them (the run's Redis hash and points
stream, docs/contracts.md), in the format of docs/contracts.md / the generation contract:
``ensemble`` and ``samples`` per point. The end-to-end generation test (a real LM pair and a
scorer through a worker) comes with the generation core.
"""

from __future__ import annotations

import json
import secrets
import time

import pytest

pytestmark = pytest.mark.browser

NEG, POS, DATA = "1" * 64, "2" * 64, "3" * 64
ALPHAS = [-0.5, 0.0, 0.5, 1.0, 1.5]
SPEC = {"path": {"type": "linear", "a": NEG, "b": POS, "points": 5, "range": [-0.5, 1.5]},
        "dataset": DATA, "task": "causal_lm", "metrics": ["loss", "sentiment"], "ensemble": True,
        "generation": {"prompts": DATA, "samples_per_prompt": 2, "keep_samples": 4}}

#: per figure: [curve x, ensemble x, ensemble y]
TRACES = """() => Array.from(document.querySelectorAll('.run-graph .js-plotly-plot')).map(g => {
  const c = g.data.find(t => t.meta === 'curve'), e = g.data.find(t => t.meta === 'ensemble');
  return {curve: c ? Array.from(c.x) : null, ens_x: e ? Array.from(e.x) : null,
          ens_y: e ? Array.from(e.y) : null, ens_name: e ? e.name : null, ens_dash: e ? e.line.dash : null,
          names: g.data.map(t => t.name)}; })"""


def _point(i: int) -> dict:
    a = ALPHAS[i]
    loss = 3.0 + 0.8 * (1 - abs(2 * a - 1)) if 0 <= a <= 1 else 3.0 + abs(a)
    ens = loss if a in (0.0, 1.0) else 3.0 + 0.1 * a
    return {"index": i, "coords": {"alpha": a}, "metrics": {"loss": loss, "sentiment": 0.3 + 0.25 * a},
            "ensemble": {"loss": ens},
            "samples": [{"prompt": f"The weather today {j}", "text": f"text of point {i} sample {j}",
                         "sentiment": round(0.3 + 0.25 * a + 0.01 * j, 4)} for j in range(2)]}


class LiveRun:
    """A run the page polls, whose points this test records one at a time."""

    def __init__(self, stack):
        self.r = stack.redis()
        self.id = secrets.token_urlsafe(16)
        self.key = f"basin:run:{self.id}"
        now = time.time()
        self.r.hset(self.key, mapping={
            "spec": json.dumps(SPEC), "status": "running", "total": len(ALPHAS), "done": 0,
            "created": repr(now), "started": repr(now), "evaluations": 0, "cached": 0,
            "names": json.dumps({NEG: "negative", POS: "positive", DATA: "tweets.csv"})})

    def record(self, *indices: int) -> None:
        for i in indices:
            self.r.xadd(self.key + ":points", {"point": json.dumps(_point(i))})
            self.r.hincrby(self.key, "done", 1)

    def finish(self) -> None:
        self.r.hset(self.key, mapping={"status": "done", "finished": repr(time.time())})

    def delete(self) -> None:
        self.r.delete(self.key, self.key + ":points")


@pytest.fixture
def live_run(stack):
    run = LiveRun(stack)
    yield run
    run.delete()


def _traces(page) -> list[dict]:
    return page.evaluate(TRACES)


def _wait_ensemble(page, xs: list[float]) -> None:
    """Until the loss figure draws both traces at exactly ``xs`` (a rebuild from Python that
    started before the last points may redraw fewer for one poll; the next poll patches them)."""
    page.wait_for_function(f"""(want) => {{ const t = ({TRACES})(); const same = (a) => a && a.length === want.length
      && a.every((v, i) => v === want[i]); return t.length === 2 && same(t[0].ens_x) && same(t[0].curve); }}""",
                           arg=xs)


def _click_point(page, alpha: float, index: int) -> None:
    """Click the weight-interpolation curve's marker at ``alpha`` in the first figure (its
    drawn marker, placed by the figure's axes) until the viewer shows point
    ``index``: a figure rebuilt from Python at that moment (the run's status or refinement
    changed) replaces the markers under the pointer and loses the click."""
    # the marker's place from the figure's own axes (data → pixels), not from the SVG's trace
    # groups, whose order and layers vary (the interval band is drawn beneath with zorder −1)
    locate = """(alpha) => { const g = document.querySelector('.run-graph .js-plotly-plot');
      const c = g && g.data && g.data.find(t => t.meta === 'curve');
      const fl = g && g._fullLayout;
      const k = c ? Array.from(c.x).indexOf(alpha) : -1;
      if (k < 0 || !fl || !fl.xaxis || !fl.yaxis || c.y[k] == null) return null;  // not drawn yet
      let box = g.getBoundingClientRect();
      if (box.top < 0 || box.bottom > window.innerHeight) { g.scrollIntoView({block: 'center'}); box = g.getBoundingClientRect(); }
      return [box.x + fl.xaxis._offset + fl.xaxis.d2p(alpha), box.y + fl.yaxis._offset + fl.yaxis.d2p(c.y[k])]; }"""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    shown = f"() => document.querySelector('#run-sample-point').textContent.includes('point {index})')"
    for _ in range(5):
        x, y = page.wait_for_function(locate, arg=alpha).json_value()
        page.mouse.move(x, y)
        page.mouse.click(x, y)
        try:
            page.wait_for_function(shown, timeout=5_000)
            return
        except PlaywrightTimeout:
            continue
    raise AssertionError(f"clicking the point at α = {alpha} never showed its samples")


def _sample_texts(page) -> list[str]:
    return page.locator("#run-sample-rows .run-sample-text").all_inner_texts()


def test_output_ensemble_and_samples_grow_live_and_a_clicked_point_shows_its_generations(
        stack, live_run, page, screenshots):
    page.goto(stack.base_url + f"/runs/{live_run.id}")
    page.locator("#run-samples").wait_for()
    page.wait_for_function("() => { const gs = document.querySelectorAll('.run-graph .js-plotly-plot');"
                           " return gs.length === 2 && Array.from(gs).every(g => g.data); }")
    assert "No samples yet" in page.locator("#run-sample-point").inner_text()
    figs = _traces(page)
    assert [f["ens_name"] for f in figs] == ["output ensemble", "output ensemble"]  # drawn from the start
    assert figs[0]["ens_dash"] == "dash" and "weight interpolation" in figs[0]["names"]

    live_run.record(0, 4, 2)  # coarse to fine, as workers send them
    _wait_ensemble(page, [-0.5, 0.5, 1.5])
    loss = _traces(page)[0]
    assert loss["ens_y"] == pytest.approx([_point(i)["ensemble"]["loss"] for i in (0, 2, 4)])
    page.wait_for_function("() => document.querySelector('#run-sample-point').textContent.includes('α =')")
    # the viewer opens on the first sampled point; a click on the curve picks another
    _click_point(page, 0.5, 2)
    assert _sample_texts(page) == ["text of point 2 sample 0", "text of point 2 sample 1"]
    prompts = page.locator("#run-sample-rows .run-sample-prompt").all_inner_texts()
    assert prompts == ["The weather today 0", "The weather today 1"]
    scores = page.locator("#run-sample-rows .run-sample-sentiment").all_inner_texts()
    assert [float(s) for s in scores] == pytest.approx([0.425, 0.435])
    assert "sentiment" in page.locator("#run-sample-rows thead").inner_text()

    # the rest arrives: both traces and the slider's choices grow, without a reload
    live_run.record(1, 3)
    _wait_ensemble(page, ALPHAS)
    # the α slider: a click on its track at α = 1.0 picks the new point there
    page.wait_for_function("() => document.querySelectorAll('#run-sample-alpha .dash-slider-mark').length === 5")
    page.locator("#run-sample-alpha").scroll_into_view_if_needed()
    track = page.locator("#run-sample-alpha .dash-slider-track").first.bounding_box()
    frac = (1.0 - ALPHAS[0]) / (ALPHAS[-1] - ALPHAS[0])
    page.mouse.click(track["x"] + frac * track["width"], track["y"] + track["height"] / 2)
    page.wait_for_function("() => document.querySelector('#run-sample-point').textContent.includes('point 3')")
    assert _sample_texts(page) == ["text of point 3 sample 0", "text of point 3 sample 1"]

    live_run.finish()  # the page rebuilds its figures from Python: the ensemble stays drawn
    page.wait_for_function("() => document.querySelector('#run-status').textContent.trim() === 'done'")
    _wait_ensemble(page, ALPHAS)
    ens = _traces(page)[0]
    assert ens["ens_y"][1] == pytest.approx(_point(1)["metrics"]["loss"])  # α = 0: the two coincide
    assert ens["ens_y"][3] == pytest.approx(_point(3)["metrics"]["loss"])  # α = 1
    page.screenshot(path=str(screenshots / "run-generation-samples.png"), full_page=True)
    assert not page.js_errors, page.js_errors
