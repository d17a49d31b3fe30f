"""What a new user trips over (issue 28), in real Chromium against the session's stack: the
first start's banner, the cost estimate and the queue, background demo work yielding to a
person's run, the copied spec running with ``basin eval``, and no Plotly cloud button."""

from __future__ import annotations

import json
import re
import time

import pytest
import redis
import yaml

from basin.cli import main

pytestmark = pytest.mark.browser


def test_the_first_start_banner_says_what_is_built_and_when(stack, store_family, page, screenshots):
    from service.runstate.keys import DEMO_LM_STATUS_KEY, DEMO_STATUS_KEY

    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    now = time.time()
    r.set(
        DEMO_STATUS_KEY,
        json.dumps(
            {
                "state": "building",
                "fraction": 0.4,
                "stage": "training minilm-full-o1-s0: step 30/60 (member 1/2)",
                "eta_s": 250.0,
                "what": "all-MiniLM-L6-v2 fine-tuned on tweets with two seeds",
                "updated": now,
                "started": now - 160,
                # the demo is a tune job (issue 25): the banner links to its page
                "run_id": "0" * 32,
                "run_url": "/tunes/" + "0" * 32,
                "members": [
                    {"name": "minilm-full-o1-s0", "status": "running", "step": 30, "total": 60},
                    {"name": "minilm-full-o2-s0", "status": "queued", "step": 0, "total": 60},
                ],
            }
        ),
    )
    r.set(
        DEMO_LM_STATUS_KEY,
        json.dumps(
            {
                "state": "waiting",
                "fraction": 0.0,
                "stage": "waits for the MiniLM demo",
                "what": "SmolLM2-135M fine-tuned on negative and on positive tweets",
                "updated": now,
            }
        ),
    )
    try:
        page.goto(stack.base_url + "/")
        alert = page.locator("#demo-alert")
        alert.wait_for()
        text = alert.inner_text()
        assert "First start: building the demo" in text and "MiniLM" in text
        assert "step 30/60" in text and "ready in about 4 min" in text
        assert "Then:" in text and "SmolLM2-135M" in text
        assert page.locator("#demo-progress").inner_text().strip() == "40%"
        assert page.locator("#demo-tune-link").get_attribute("href") == "/tunes/" + "0" * 32
        members = page.locator("#demo-members").inner_text()
        assert (
            "minilm-full-o1-s0 30/60 (running)" in members
            and "minilm-full-o2-s0 0/60 (queued)" in members
        )
        page.screenshot(path=str(screenshots / "first-start-banner.png"), full_page=True)
    finally:
        r.delete(DEMO_STATUS_KEY, DEMO_LM_STATUS_KEY)
    assert not page.js_errors, page.js_errors


def _linear(stack, store_family, *, points: int, background: bool = False, name: str = "") -> str:
    spec = {
        "path": {
            "type": "linear",
            "a": store_family["ft_a"],
            "b": store_family["ft_b"],
            "points": points,
        },
        "dataset": store_family["data"],
        "metrics": ["loss", "accuracy"],
        "max_examples": 32,
        **({"name": name} if name else {}),
    }
    r = stack.request("POST", "/api/runs" + ("?background=true" if background else ""), json=spec)
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_a_persons_run_goes_ahead_of_background_work_and_shows_its_queue(
    stack, store_family, page, screenshots
):
    """One worker. A background run (the demo's ready run) is held at its first point; a
    person's run queued then shows its place (position 1: the background run yields), the
    workers and an estimate; when the background run's point ends its worker takes the
    person's run, which finishes while the background run still waits at its second point."""
    seam = stack.seam
    first = seam.hold("any", 0)
    bg = _linear(stack, store_family, points=5, background=True, name="demo work")
    seam.wait(stack, bg, 0)  # the only worker is inside the background run's first point
    mine = _linear(stack, store_family, points=3, name="my first run")
    page.goto(f"{stack.base_url}/runs/{mine}")
    queue = page.locator("#run-queue")
    queue.wait_for()
    text = queue.inner_text()
    assert "Queued: position 1" in text and "1 worker" in text and "it starts next" in text, text
    assert "demo work" not in text  # background work is not ahead of a person's run
    assert "Estimated time:" in page.locator("#run-cost").inner_text()
    assert page.locator("#run-count").inner_text() == "0 points"
    page.screenshot(path=str(screenshots / "queued-run.png"), full_page=True)
    # the background run's page says where it stands too
    detail = stack.request("GET", f"/api/runs/{bg}").json()
    assert detail["status"] == "running" and detail["estimate"]["points"] == 5

    seam.hold(bg)  # the background run stops at its next point…
    seam.release(bg, 0)
    seam.unhold(first)
    done = stack.wait_run(mine)  # …but yields to mine before leasing it
    assert done["status"] == "done"
    held = stack.request("GET", f"/api/runs/{bg}").json()
    assert held["status"] == "running" and held["done"] == 1, held
    page.locator("#run-status", has_text="done").wait_for()
    page.locator("#run-queue").wait_for(state="detached")
    page.locator(
        "#run-distance"
    ).wait_for()  # the distance card arrives with the summary, no reload
    assert page.locator("#run-count").inner_text() == "3 points"
    # no control sends the figure off the machine: the modebar has PNG, not "Share chart…"
    page.locator(".run-graph .modebar-btn").first.wait_for(state="attached")
    titles = page.eval_on_selector_all(
        ".modebar-btn", "els => els.map(e => e.getAttribute('data-title'))"
    )
    assert any("png" in (t or "").lower() for t in titles), titles
    assert not [
        t for t in titles if "share" in (t or "").lower() or "cloud" in (t or "").lower()
    ], titles
    seam.release(bg)
    assert stack.wait_run(bg)["status"] == "done"
    assert not page.js_errors, page.js_errors


def test_check_estimates_and_the_copied_spec_runs_with_basin_eval(
    stack, store_family, page, tmp_path, screenshots, monkeypatch
):
    page.goto(stack.base_url + "/")
    page.select_option("#newrun-type", "linear")
    page.select_option("#newrun-ckpt-1", store_family["ft_a"])
    page.select_option("#newrun-ckpt-2", store_family["ft_b"])
    page.select_option("#newrun-dataset", store_family["data"])
    page.fill("#newrun-points", "4")
    page.fill("#newrun-max", "16")
    page.click("#newrun-check")
    result = page.locator("#newrun-result", has_text="OK")
    result.wait_for()
    text = result.inner_text()
    assert "OK — 4 points." in text and "Estimated time: about" in text, text
    assert "4 points × 16 examples on 1 worker" in text, text
    finished = [x for x in stack.request("GET", "/api/runs").json() if x["status"] == "done"]
    assert ("measured on" in text) == bool(finished), text  # else the documented fallback
    page.screenshot(path=str(screenshots / "check-estimate.png"), full_page=True)
    page.click("#newrun-copy")
    page.locator("#newrun-result", has_text="--store").wait_for()
    copied = page.locator("#newrun-yaml").inner_text()
    assert yaml.safe_load(copied)["path"]["a"] == store_family["ft_a"]
    spec = tmp_path / "spec.yaml"
    spec.write_text(copied)
    out = tmp_path / "r.json"
    monkeypatch.delenv("BASIN_STORE", raising=False)
    assert main(["eval", str(spec), "-o", str(out), "-q", "--store", str(stack.store)]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["points"]) == 4 and doc["spec"]["max_examples"] == 16
    assert not page.js_errors, page.js_errors


def test_the_form_offers_what_fits_and_merges_start_from_theta0(
    stack, store_family, page, screenshots
):
    page.goto(stack.base_url + "/")
    ft_a = f"#newrun-ckpt-1 option[value='{store_family['ft_a']}']"
    page.locator(ft_a).wait_for(state="attached")
    page.select_option("#newrun-task", "causal_lm")  # ft_a is a sequence classifier
    page.locator(ft_a).wait_for(state="detached")
    page.select_option("#newrun-task", "classification")
    page.locator(ft_a).wait_for(state="attached")
    # a TIES merge: the base θ0 defaults to the init checkpoint, the models picker says what it wants
    page.select_option("#newrun-type", "ties")
    page.wait_for_function(
        f"document.querySelector('#newrun-ckpt-1').value === '{store_family['init']}'"
    )
    page.locator("#newrun-row-traj", has_text="pick the fine-tuned models to merge").wait_for()
    page.screenshot(path=str(screenshots / "new-run-ties-base.png"), full_page=True)
    # a plane through a repeated checkpoint: refused naming the checkpoints, not their ids
    page.select_option("#newrun-type", "plane")
    page.locator("#newrun-row-3").wait_for(state="visible")
    for k, name in ((1, "ft_a"), (2, "ft_a"), (3, "ft_b")):
        page.select_option(f"#newrun-ckpt-{k}", store_family[name])
    page.select_option("#newrun-dataset", store_family["data"])
    page.click("#newrun-check")
    err = page.locator("#newrun-result.newrun-error")
    err.wait_for()
    assert "'ft_a', 'ft_a', 'ft_b'" in err.inner_text() and not re.search(
        r"[0-9a-f]{64}", err.inner_text()
    )
    assert not page.js_errors, page.js_errors


def test_a_failed_run_shows_its_error_once_and_no_empty_charts(
    stack, store_family, page, screenshots
):
    """Check refuses this scope now; queued without the API (as a fit queues its evaluations)
    it fails in the worker before its first point."""
    from basin.spec import parse_spec
    from service.runstate.create import create_run

    spec = parse_spec(
        {
            "path": {
                "type": "linear",
                "a": store_family["ft_a"],
                "b": store_family["ft_b"],
                "points": 3,
            },
            "dataset": store_family["data"],
            "max_examples": 16,
            "scope": "^no_such_param$",
        }
    )
    run_id = create_run(
        redis.Redis.from_url(stack.redis_url, decode_responses=True),
        spec,
        redis_url=stack.redis_url,
        queue="basin",
        names={store_family["ft_a"]: "ft_a", store_family["ft_b"]: "ft_b"},
    )
    assert stack.wait_run(run_id)["status"] == "failed"
    page.goto(f"{stack.base_url}/runs/{run_id}")
    page.locator("#run-no-figures").wait_for()
    assert page.locator(".run-graph").count() == 0
    # the page's poll has answered (it writes the workers line): the error must not come twice
    page.wait_for_function("document.querySelector('#run-extra').textContent.includes('worker')")
    header = page.locator("#run-status").locator("xpath=..").inner_text()
    assert header.count("no_such_param") == 1, header
    assert page.locator("#run-count").inner_text() == "0 points"
    assert not page.locator("#run-fit-box").is_visible()
    page.screenshot(path=str(screenshots / "failed-run.png"), full_page=True)
    assert not page.js_errors, page.js_errors


def test_an_upload_of_stored_files_takes_the_name_typed(
    stack, store_family, classifier_family, page, tmp_path
):
    """The same files as the stored ft_c, uploaded under another name: the upload dedups and
    the checkpoint takes the name typed (then gets its own back, for the other tests)."""
    import zipfile

    archive = tmp_path / "again.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for f in classifier_family["ft_c"].iterdir():
            z.write(f, f"ft_c/{f.name}")
    page.goto(stack.base_url + "/checkpoints")
    page.set_input_files("#ckpt-upload-file", str(archive))
    page.fill("#ckpt-upload-name", "ft_c-again")
    page.click("#ckpt-upload-button")
    try:
        status = page.locator("#ckpt-upload-status", has_text="renamed to ft_c-again")
        status.wait_for()
        assert "Already stored (the same files, as ft_c)" in status.inner_text()
        named = {m["name"]: m["id"] for m in stack.request("GET", "/api/checkpoints").json()}
        assert named.get("ft_c-again") == store_family["ft_c"] and "ft_c" not in named
    finally:
        r = stack.request(
            "PATCH",
            f"/api/checkpoints/{store_family['ft_c']}",
            json={"name": "ft_c"},
            headers=stack.headers,
        )
        assert r.status_code == 200, r.text
    assert not page.js_errors, page.js_errors
