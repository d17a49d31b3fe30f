"""Curve fits as service jobs (``POST /api/fits``) on the real stack: the worker streams the
training loss, stores the control point as a checkpoint and queues the line and curve
evaluations; cancel stops it; a bad spec is refused before anything is queued.

The shared store's ``ft_*`` checkpoints share one init (no barrier to get around), so the
pair here is trained from two different random inits, like ``tests/core/test_fit.py``.
"""

from __future__ import annotations

import time

import pytest

from service.store import Store
from tests import factories

WRITE = {"X-Basin-Token": ""}


def add_fit_pair(store_root, root) -> dict[str, str]:
    """``fit_a`` / ``fit_b`` (different inits, a real line barrier), ``fit_train.csv`` and
    ``fit_eval.csv`` added to the store at ``store_root`` (built under ``root``)."""
    tok = factories.make_tokenizer("bert")
    store = Store(store_root)
    for name, seed in (("fit_a", 10), ("fit_b", 11)):
        m = factories.init_classifier(seed, num_hidden_layers=2)
        factories.finetune_classifier(m, seed, steps=60, lr=5e-3)
        store.add_checkpoint_dir(factories.save(m, root / name, tok), name=name)
    store.add_dataset(factories.write_classification_dataset(root / "train.csv", n=128, seed=5),
                      name="fit_train.csv")
    store.add_dataset(factories.write_classification_dataset(root / "eval.csv", n=64, seed=6),
                      name="fit_eval.csv")
    return {"a": "fit_a", "b": "fit_b", "dataset": "fit_train.csv"}


@pytest.fixture(scope="module")
def fit_pair(stack, tmp_path_factory) -> dict[str, str]:
    """The fit pair in the shared stack's store."""
    return add_fit_pair(stack.store, tmp_path_factory.mktemp("fitpair"))


def fit_body(pair: dict[str, str], **kw) -> dict:
    return {**pair, "eval_dataset": "fit_eval.csv", "steps": 100, "lr": 1e-2, "batch_size": 16,
            "eval_points": 5, "max_examples": 128, **kw}


def wait_fit(stack, fit_id: str, until=("done", "failed", "cancelled"), *, timeout: float = 180.0,
             seen: list[int] | None = None) -> dict:
    """Poll ``GET /api/fits/{id}`` until its status is in ``until``; ``seen`` collects the
    number of losses of each answer."""
    deadline = time.monotonic() + timeout
    while True:
        body = stack.request("GET", f"/api/fits/{fit_id}").json()
        if seen is not None:
            seen.append(len(body.get("losses") or []))
        if body.get("status") in until:
            return body
        assert time.monotonic() < deadline, (body, stack.log("worker0"))
        time.sleep(0.1)


def max_loss(stack, run_id: str) -> float:
    pts = stack.request("GET", f"/api/runs/{run_id}/points").json()["points"]
    return max(p["metrics"]["loss"] for p in pts)


def test_a_fit_runs_on_a_worker_stores_its_control_and_queues_both_evaluations(stack, fit_pair):
    r = stack.request("POST", "/api/fits", json=fit_body(fit_pair))
    assert r.status_code == 201, r.text
    fit_id = r.json()["id"]
    assert r.json()["url"].endswith(f"/fits/{fit_id}")
    seen: list[int] = []
    body = wait_fit(stack, fit_id, seen=seen)
    assert body["status"] == "done", body
    # the losses streamed in while it ran: more than one distinct count was seen before the end
    assert len(set(seen)) > 2
    assert body["step"] == body["total"] == 100
    assert [x["step"] for x in body["losses"]] == list(range(1, 101))
    assert body["error"] is None and body["eta_s"] is None
    # the control point is a checkpoint in the store, tagged with where it came from
    ckpt = stack.request("GET", f"/api/checkpoints/{body['control']}").json()
    assert ckpt["tags"]["role"] == "fitted control"
    assert ckpt["tags"]["fitted_from"] == "fit_a + fit_b" and ckpt["tags"]["fit"] == fit_id
    # the two evaluations it queued finish, and the fitted curve gets around the line's barrier
    line, curve = body["runs"]["line"], body["runs"]["curve"]
    assert stack.wait_run(line)["status"] == "done"
    curve_run = stack.wait_run(curve)
    assert curve_run["status"] == "done"
    assert curve_run["spec"]["path"]["type"] == "bezier"
    assert curve_run["spec"]["path"]["control"] == body["control"]
    assert max_loss(stack, curve) < max_loss(stack, line) - 0.1


def test_cancel_stops_a_running_fit(stack, fit_pair):
    fit_id = stack.request("POST", "/api/fits", json=fit_body(fit_pair, steps=100_000)).json()["id"]
    deadline = time.monotonic() + 300  # a hang limit: the loop ends on the event
    while stack.request("GET", f"/api/fits/{fit_id}").json()["step"] < 3:  # (losses: one per 100 steps)
        assert time.monotonic() < deadline
        time.sleep(0.1)
    r = stack.request("POST", f"/api/fits/{fit_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    body = wait_fit(stack, fit_id)
    assert body["status"] == "cancelled"
    assert 3 <= body["step"] < 100_000 and body["control"] is None and body["runs"] == {}
    assert stack.request("POST", f"/api/fits/{fit_id}/cancel").status_code == 409


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"b": "nope-ckpt"}, "nope-ckpt"),
        ({"dataset": "missing.csv"}, "missing.csv"),
        ({"steps": 0}, "steps"),
        ({"b": "fit_a"}, "same checkpoint"),
        ({"b": "wide"}, "incompatible"),
        ({"curve": "spline"}, "curve"),
        # trained on its own evaluation examples (issue 23): refused unless allow_overlap
        ({"eval_dataset": None}, "128 of the fit's 128 training examples are also among its 128 evaluation"),
        ({"eval_dataset": "fit_train.csv", "max_examples": 16}, "allow_overlap: true"),
    ],
    ids=["unknown-checkpoint", "unknown-dataset", "no-steps", "same-endpoints", "incompatible", "bad-curve",
         "same-file", "same-examples"],
)
def test_a_bad_fit_spec_is_422_with_the_reason_and_nothing_is_queued(stack, fit_pair, change, needle):
    before = stack.redis().zcard("basin:fits")
    r = stack.request("POST", "/api/fits", json=fit_body(fit_pair, **change))
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"]
    assert stack.redis().zcard("basin:fits") == before


def test_the_fits_list_shows_each_fit_and_an_ended_fit_expires_like_an_ended_run(stack, fit_pair):
    r = stack.request("POST", "/api/fits", json=fit_body(fit_pair, steps=5, eval_points=3))
    fit_id = r.json()["id"]
    body = wait_fit(stack, fit_id)
    assert body["status"] == "done", body
    listed = stack.request("GET", "/api/fits").json()
    entry = next(f for f in listed if f["id"] == fit_id)
    assert entry["status"] == "done" and entry["curve"] == "bezier"
    assert (entry["a_name"], entry["b_name"]) == ("fit_a", "fit_b")
    assert entry["step"] == entry["total"] == 5 and entry["url"].endswith(f"/fits/{fit_id}")
    assert entry["final_loss"] == body["final_loss"] and entry["control"] == body["control"]
    assert entry["runs"] == body["runs"] and set(entry["runs"]) == {"line", "curve"}
    # the line run (and any straight line between the same endpoints) finds the fitted curve
    line, curve = body["runs"]["line"], body["runs"]["curve"]
    assert stack.wait_run(line)["status"] == "done" and stack.wait_run(curve)["status"] == "done"
    found = stack.request("GET", f"/api/runs/{line}/fitted").json()["fits"]
    assert found[0]["fit"] == fit_id and found[0]["curve_run"] == curve and found[0]["line_run"] == line
    assert found[0]["control"] == body["control"] and found[0]["same_data"] is True
    other = stack.request("POST", "/api/runs", json={
        "path": {"type": "linear", "a": "fit_a", "b": "fit_b", "points": 3}, "dataset": "fit_train.csv",
        "max_examples": 16}).json()["id"]
    assert stack.wait_run(other)["status"] == "done"
    theirs = stack.request("GET", f"/api/runs/{other}/fitted").json()["fits"]
    assert fit_id in [f["fit"] for f in theirs]
    assert next(f for f in theirs if f["fit"] == fit_id)["same_data"] is False  # other data: said so
    assert stack.request("GET", f"/api/runs/{curve}/fitted").json()["fits"] == []  # not a line
    created = [f["created"] for f in listed]
    assert created == sorted(created, reverse=True)  # newest first
    # once ended, its keys get the ended-run TTL (BASIN_FINISHED_RUN_TTL_S: a day by default)
    red = stack.redis()
    keys = [f"basin:fit:{fit_id}", f"basin:fit:{fit_id}:losses"]
    deadline = time.monotonic() + 60  # (the reaper's next pass; the limit only stops a hang)
    while red.ttl(keys[0]) < 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert all(0 < red.ttl(k) <= 24 * 3600 for k in keys)
    for k in keys:  # as a day later
        red.pexpire(k, 1)
    while red.exists(*keys):
        time.sleep(0.05)
    gone = stack.request("GET", f"/api/fits/{fit_id}")
    assert gone.status_code == 404 and "forgotten" in gone.json()["detail"]
    assert fit_id not in {f["id"] for f in stack.request("GET", "/api/fits").json()}
    # what it produced stays: the control checkpoint and both evaluation runs
    assert stack.request("GET", f"/api/checkpoints/{body['control']}").status_code == 200
    assert stack.wait_run(body["runs"]["curve"])["status"] == "done"
    # and the line still finds its curve through the curve's run and the control's tags
    later = stack.request("GET", f"/api/runs/{line}/fitted").json()["fits"]
    mine = [f for f in later if f["curve_run"] == curve]
    assert len(mine) == 1 and mine[0]["fit"] is None and mine[0]["control"] == body["control"]


def test_an_unknown_fit_is_404(stack):
    r = stack.request("GET", "/api/fits/AAAAAAAAAAAAAAAAAAAAAA")
    assert r.status_code == 404 and "no fit" in r.json()["detail"]
