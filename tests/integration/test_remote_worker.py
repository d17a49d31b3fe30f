"""A worker on another machine: an EMPTY store, ``BASIN_API_URL`` pointing at the API.

It fetches the run's checkpoints and dataset by id (``/archive``, ``/file``), checks
their sha256 against the requested id, and computes the same metrics as a worker on
the shared store. A download that does not hash to its id fails the run and leaves
nothing in the worker's store. One stack (real redis-server, Celery workers, uvicorn)
serves the module; the tests run in order (the shared-store worker first).
"""

from __future__ import annotations

import io
import shutil
import tarfile
import time
from pathlib import Path

import pytest

from service.runstate import RunKeys
from service.store import Store
from tests.integration.conftest import LEASE_SECONDS, linear_spec
from tests.stack import running_stack

UNKNOWN = "0" * 64


@pytest.fixture(scope="module")
def remote(store_root, tmp_path_factory):
    """The stack over a private copy of the store, one shared-store worker; and an empty
    folder for the remote worker's store."""
    base = tmp_path_factory.mktemp("remote")
    api_store = base / "store"
    shutil.copytree(store_root, api_store, ignore=shutil.ignore_patterns("runs", "tmp"))
    with running_stack(api_store, workers=1, lease_seconds=LEASE_SECONDS, ui=False) as s:
        yield s, base / "worker-store"


def _points(stack, run_id: str) -> list[dict]:
    pts = stack.request("GET", f"/api/runs/{run_id}/points").json()["points"]
    return sorted(pts, key=lambda p: p["index"])


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


def test_download_routes_serve_the_content_of_the_id_and_404_unknown(remote):
    stack, _ = remote
    api = Store(stack.store)
    ft_a = api.get_checkpoint("ft_a")
    r = stack.request("GET", "/api/checkpoints/ft_a/archive")
    assert r.status_code == 200, r.text
    assert r.headers["x-basin-checkpoint-id"] == ft_a["id"]
    assert int(r.headers["content-length"]) == len(r.content)
    with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:") as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf if m.isreg()}
    ckpt_dir = Path(ft_a["path"])
    # every model file of the stored folder (weights, config, tokenizer), not the manifest
    assert set(members) == {p.name for p in ckpt_dir.iterdir()} - {"manifest.json"}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(members)
    assert members["model.safetensors"] == (ckpt_dir / "model.safetensors").read_bytes()

    ds = api.get_dataset("eval.csv")
    r = stack.request("GET", f"/api/datasets/{ds['id'][:10]}/file")
    assert r.status_code == 200
    assert r.headers["x-basin-dataset-id"] == ds["id"]
    assert r.content == Path(ds["path"]).read_bytes()

    for path in (
        f"/api/checkpoints/{UNKNOWN}/archive",
        f"/api/datasets/{UNKNOWN}/file",
        "/api/checkpoints/no-such-model/archive",
        "/api/datasets/nope.csv/file",
    ):
        r = stack.request("GET", path, headers={})
        assert r.status_code == 404, path
        assert "no " in r.json()["detail"]


def test_a_worker_with_an_empty_store_fetches_by_id_and_matches_the_shared_store(remote):
    stack, worker_store = remote
    spec = linear_spec(points=5, seed=71)
    shared = stack.request("POST", "/api/runs", json=spec).json()["id"]
    assert stack.wait_run(shared)["status"] == "done"
    expected = _points(stack, shared)

    stack.kill_worker(0)  # from now on only the remote worker drains runs
    red = stack.redis()
    for key in red.scan_iter(match="basin:pointcache:*"):  # make it evaluate, not reuse
        red.delete(key)
    worker_store.mkdir()
    assert _files(worker_store) == set()
    i = stack.start_worker(env={"BASIN_STORE": str(worker_store), "BASIN_API_URL": stack.base_url})

    run_id = stack.request("POST", "/api/runs", json=spec).json()["id"]
    # wait on Redis, not the API: reading the run through the API would store it
    deadline = time.monotonic() + 120
    while red.hget(RunKeys(run_id).run, "status") not in ("done", "failed", "cancelled"):
        assert time.monotonic() < deadline, "the remote worker did not finish the run"
        time.sleep(0.2)
    # nobody opened the run, yet the API's store gets its document: the worker asked for it
    deadline = time.monotonic() + 20
    while Store(stack.store).load_run(run_id) is None:
        assert time.monotonic() < deadline, "the finished run was never stored by the API"
        time.sleep(0.2)
    body = stack.wait_run(run_id, timeout=10)
    assert body["status"] == "done", body.get("error")
    got = _points(stack, run_id)
    assert [p["coords"] for p in got] == [p["coords"] for p in expected]
    for g, e in zip(got, expected, strict=True):
        for metric, value in e["metrics"].items():
            assert g["metrics"][metric] == pytest.approx(value, rel=1e-6, abs=1e-9), metric
    entries = red.xrange(RunKeys(run_id).points)
    assert len(entries) == 5
    assert {f["worker"] for _, f in entries} == {stack.worker_names[i]}
    assert {f["cached"] for _, f in entries} == {"0"}  # evaluated there, not reused

    api, local = Store(stack.store), Store(worker_store)
    for name in ("ft_a", "ft_b"):
        m = api.get_checkpoint(name)
        fetched = local.get_checkpoint(m["id"])
        assert fetched["name"] == name and fetched["tags"] == m["tags"]
        assert (Path(fetched["path"]) / "model.safetensors").read_bytes() == (
            Path(m["path"]) / "model.safetensors"
        ).read_bytes()
    assert local.get_dataset(api.get_dataset("eval.csv")["id"])["name"] == "eval.csv"
    assert {p.name for p in local.checkpoints_dir.iterdir()} == {
        api.get_checkpoint(n)["id"] for n in ("ft_a", "ft_b")
    }
    assert list(local.tmp_dir.iterdir()) == []
    # the result document is the API's to write (its store serves share links)
    assert list(local.runs_dir.iterdir()) == []
    assert api.load_run(run_id)["status"] == "done"


def test_a_download_that_does_not_hash_to_its_id_fails_the_run_and_leaves_nothing(remote):
    stack, worker_store = remote
    api, local = Store(stack.store), Store(worker_store)
    ft_c = api.get_checkpoint("ft_c")
    weights = Path(ft_c["path"]) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight: still a valid file, another sha256
    weights.write_bytes(bytes(data))
    before = _files(worker_store)

    spec = {
        **linear_spec(points=3, seed=72),
        "path": {"type": "linear", "a": "ft_a", "b": "ft_c", "points": 3},
    }
    r = stack.request("POST", "/api/runs", json=spec)
    assert r.status_code == 201, r.text
    body = stack.wait_run(r.json()["id"], timeout=90)
    assert body["status"] == "failed"
    # the failure names the checkpoint (issue 28: names, not 64-hex ids), and the hash it got
    assert "hashes to" in body["error"] and "ft_c" in body["error"], body["error"]
    assert "fetching checkpoint" in body["error"]
    time.sleep(0.2)
    assert ft_c["id"] not in {p.name for p in local.checkpoints_dir.iterdir()}
    assert list(local.tmp_dir.iterdir()) == []
    after = _files(worker_store)
    assert after - before <= {".lock"}, after - before
