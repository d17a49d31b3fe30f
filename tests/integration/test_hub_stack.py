"""Checkpoints by Hub id through the real API and a real Celery worker: ``POST
/api/checkpoints/hub`` queues a ``hub`` job, the worker fetches from a local Hub-compatible
endpoint (:mod:`tests.hubserver`, the worker's ``HF_ENDPOINT``; its ``HF_TOKEN`` opens a
private repository), the revision is pinned to the commit, a corrupted file is refused with
nothing stored, and a run spec's ``hf:org/name@rev`` resolves to the stored checkpoint."""

from __future__ import annotations

import time

import pytest

from service.store import Store
from tests.hubserver import HubServer
from tests.stack import Stack, running_stack


@pytest.fixture(scope="module")
def hub(classifier_family):
    with HubServer() as server:
        server.add("org/tiny-bert", classifier_family["ft_a"])
        server.add("org/private-bert", classifier_family["ft_b"], private_token="hf_secret")
        server.add("org/tampered", classifier_family["ft_c"], corrupt={"model.safetensors"})
        yield server


@pytest.fixture(scope="module")
def hub_stack(hub, classifier_family, tmp_path_factory):
    root = tmp_path_factory.mktemp("hub") / "store"
    Store(root).add_dataset(classifier_family["data"], name="eval.csv")
    env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_secret"}
    with running_stack(root, workers=1, ui=False, env=env) as s:
        yield s


def _wait(stack: Stack, url: str, timeout: float = 300.0) -> dict:
    """Poll the job until it ends (a hang limit, not a speed limit)."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = stack.request("GET", url).json()
        if body.get("status") in ("done", "failed", "cancelled"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"hub job not ended after {timeout} s: {body}\n{stack.log('worker0')}")


def test_register_by_hub_id_pins_the_commit_and_a_spec_names_it(hub_stack, hub):
    r = hub_stack.request("POST", "/api/checkpoints/hub", json={"ref": "org/tiny-bert"})
    assert r.status_code == 202, r.text
    job = _wait(hub_stack, r.json()["url"])
    commit = hub.repos["org/tiny-bert"].commit
    assert job["status"] == "done", job
    assert job["commit"] == commit and job["created"] is True
    assert (
        job["files_done"] == job["files_total"] >= 3 and job["bytes_done"] == job["bytes_total"] > 0
    )
    m = hub_stack.request("GET", f"/api/checkpoints/{job['checkpoint']}").json()
    assert m["source"] == "hub" and m["architecture"] == "BertForSequenceClassification"
    assert m["tags"] == {"hub_repo": "org/tiny-bert", "hub_revision": commit, "hub_ref": "main"}

    # the worker's HF_TOKEN opens the private repository, and only it was sent
    r = hub_stack.request(
        "POST",
        "/api/checkpoints/hub",
        json={"ref": "org/private-bert@main", "name": "private one", "tags": {"seed": 2}},
    )
    private = _wait(hub_stack, r.json()["url"])
    assert private["status"] == "done", private
    assert set(hub.auths("org/private-bert")) == {"Bearer hf_secret"}
    pm = hub_stack.request("GET", f"/api/checkpoints/{private['checkpoint']}").json()
    assert pm["name"] == "private one" and pm["tags"]["seed"] == 2

    # a run spec names them by Hub id; the server resolves them to store ids
    spec = {
        "path": {
            "type": "linear",
            "a": "hf:org/tiny-bert@main",
            "b": f"hf:org/private-bert@{hub.repos['org/private-bert'].commit[:10]}",
            "points": 3,
        },
        "dataset": "eval.csv",
        "max_examples": 16,
    }
    v = hub_stack.request("POST", "/api/runs/validate", json=spec)
    assert v.status_code == 200, v.text
    assert v.json()["spec"]["path"]["a"] == job["checkpoint"]
    assert v.json()["spec"]["path"]["b"] == private["checkpoint"]
    missing = hub_stack.request(
        "POST",
        "/api/runs/validate",
        json={**spec, "path": {**spec["path"], "b": "hf:org/never-fetched"}},
    )
    assert missing.status_code == 422 and "not in the store yet: fetch it first" in missing.text

    # fetched once: asking again downloads nothing and answers the same checkpoint
    n = sum(1 for _, p, _ in hub.requests if "/resolve/" in p)
    again = _wait(
        hub_stack,
        hub_stack.request(
            "POST", "/api/checkpoints/hub", json={"ref": "org/tiny-bert@main"}
        ).json()["url"],
    )
    assert again["checkpoint"] == job["checkpoint"] and again["created"] is False
    assert sum(1 for _, p, _ in hub.requests if "/resolve/" in p) == n


def test_a_corrupted_download_fails_the_job_and_stores_nothing(hub_stack):
    before = {m["id"] for m in hub_stack.request("GET", "/api/checkpoints").json()}
    r = hub_stack.request("POST", "/api/checkpoints/hub", json={"ref": "org/tampered"})
    job = _wait(hub_stack, r.json()["url"])
    assert job["status"] == "failed" and job["checkpoint"] is None
    assert "does not match the Hub's sha256" in job["error"] and "nothing stored" in job["error"]
    assert {m["id"] for m in hub_stack.request("GET", "/api/checkpoints").json()} == before
    assert list((hub_stack.store / "tmp").iterdir()) == []


def test_bad_requests_are_refused_before_anything_is_queued(hub_stack):
    for body, needle in (
        ({"ref": "not a repo id"}, "not a Hub model id"),
        ({"ref": "org/x", "name": "a/b"}, "name"),
        ({"ref": "org/x", "token": "hf_x"}, "token"),
    ):
        r = hub_stack.request("POST", "/api/checkpoints/hub", json=body)
        assert r.status_code == 422 and needle in r.text, r.text
    assert (
        hub_stack.request("GET", "/api/checkpoints/hub/AAAAAAAAAAAAAAAAAAAAAA").status_code == 404
    )
