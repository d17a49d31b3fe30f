"""Subspace jobs (``POST /api/subspaces``, issue 27) on the real stack: a fit streams its
reconstruction and task losses and stores the projections as an artefact; an optimise
through one method stores every decoded solution as an adapter checkpoint on the base,
tagged with how it was made, which a run in adapter space then uses; bad input is refused
before anything is queued."""

from __future__ import annotations

import time

import pytest

from service.store import Store
from tests import factories

METHODS = ("adapter", "prompt", "lora")


@pytest.fixture(scope="module")
def delta_store(stack, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("subspace")
    cls = factories.build_classifier_family(root / "cls", steps=4)
    fam = factories.build_delta_family(root / "delta", cls["init"])
    store = Store(stack.store)
    # (the shared store may hold the same init under another name: its id is the reference)
    base = store.add_checkpoint_dir(fam["base"], name="sub_base")["id"]
    out = {m: store.import_checkpoint(fam[m], name=f"sub_{m}", base=base).manifest["id"] for m in METHODS}
    store.add_dataset(fam["train"], name="sub_train.csv")
    store.add_dataset(fam["data"], name="sub_eval.csv")
    return {**out, "base": base}


def wait(stack, job_id: str, *, timeout: float = 240.0, seen: list[int] | None = None) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = stack.request("GET", f"/api/subspaces/{job_id}").json()
        if seen is not None:
            seen.append(len(body.get("losses") or []))
        if body.get("status") in ("done", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, (body, stack.log("worker0"))
        time.sleep(0.1)


def test_fit_then_optimise_store_projections_and_tagged_adapters(stack, delta_store):
    fit = {
        "kind": "subspace_fit",
        "y": 2,
        "hidden": 8,
        "steps": 20,
        "lr": 0.01,
        "batch_size": 8,
        "max_length": 32,
        "tasks": {
            "s": {"train": "sub_train.csv", "eval": "sub_eval.csv", "solutions": {m: delta_store[m] for m in METHODS}}
        },
    }
    r = stack.request("POST", "/api/subspaces", json=fit)
    assert r.status_code == 201, r.text
    body = wait(stack, r.json()["id"])
    assert body["status"] == "done", body
    assert [x["step"] for x in body["losses"]] == list(range(1, 21))
    assert set(body["losses"][0]["dist"]) == {f"s/{m}" for m in METHODS}
    assert len(body["report"]["rows"]) == 3 and all(
        "reconstruction" in row for row in body["report"]["rows"]
    )
    art = body["artefact"]
    listed = stack.request("GET", "/api/artefacts").json()
    mine = next(a for a in listed if a["id"] == art)
    assert mine["type"] == "subspace" and mine["tags"]["methods"] == list(METHODS)
    assert set(mine["files"]) == {"projections.json", "projections.safetensors"}

    opt = {
        "kind": "subspace_optimise",
        "projections": art,
        "base": delta_store["base"],
        "method": "lora",
        "train": "sub_train.csv",
        "eval": "sub_eval.csv",
        "steps": 5,
        "batch_size": 8,
        "max_length": 32,
    }
    r = stack.request("POST", "/api/subspaces", json=opt)
    assert r.status_code == 201, r.text
    body = wait(stack, r.json()["id"])
    assert body["status"] == "done", body
    assert set(body["adapters"]) == set(METHODS)
    for m, cid in body["adapters"].items():
        ck = stack.request("GET", f"/api/checkpoints/{cid}").json()
        assert ck["tags"]["made_by"] == "subspace optimise" and ck["tags"]["decoded_with"] == m
        assert ck["tags"]["optimised_with"] == "lora" and ck["tags"]["projections"] == art
    # the decoded LoRA is an adapter like any other: a linear path in adapter space to the original
    run = stack.request(
        "POST",
        "/api/runs",
        json={
            "path": {"type": "linear", "a": body["adapters"]["lora"], "b": delta_store["lora"], "points": 3},
            "dataset": "sub_eval.csv",
            "space": "adapter",
            "device": "cpu",
            "max_examples": 16,
        },
    )
    assert run.status_code == 201, run.text


def test_bad_subspace_specs_are_refused_before_anything_is_queued(stack, delta_store):
    before = stack.request("GET", "/api/subspaces").json()
    cases = [
        (
            {
                "kind": "subspace_fit",
                "tasks": {"s": {"train": "sub_train.csv", "solutions": {"lora": "no_such"}}},
            },
            "no_such",
        ),
        (
            {
                "kind": "subspace_fit",
                "steps": 10**9,
                "tasks": {"s": {"train": "sub_train.csv", "solutions": {m: delta_store[m] for m in METHODS}}},
            },
            "steps",
        ),
        (
            {
                "kind": "subspace_optimise",
                "projections": delta_store["base"],
                "base": delta_store["base"],
                "method": "lora",
                "train": "sub_train.csv",
            },
            "artefact",
        ),
        ({"kind": "nothing"}, "subspace_fit"),
    ]
    for body, says in cases:
        r = stack.request("POST", "/api/subspaces", json=body)
        assert r.status_code == 422 and says in r.text, (body, r.text)
    assert stack.request("GET", "/api/subspaces").json() == before
