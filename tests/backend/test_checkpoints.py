"""The checkpoint registry API on real tiny BERT checkpoints: uploads, refusals, registry ops.

Every refused upload must answer a clear 4xx AND leave the store exactly as it was
(no file in ``tmp/``, no new checkpoint folder).
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import stat
import zipfile
from pathlib import Path

import pytest
import torch

from backend.app.main import create_app
from service.settings import Settings
from tests.backend.conftest import (
    TOKEN,
    file_sizes,
    serve,
    store_state,
    targz_dir,
    wait_for,
    zip_dir,
)

ZIP = {"Content-Type": "application/octet-stream"}


def put(client, body, name="ft-a", **params):
    return client.put(
        "/api/checkpoints", params={"name": name, **params}, content=body, headers=ZIP
    )


def assert_manifest(m: dict, name: str) -> None:
    assert m["name"] == name
    assert len(m["id"]) == 64
    assert m["architecture"] == "BertForSequenceClassification"
    assert m["model_type"] == "bert"
    assert m["num_parameters"] == 30050  # the tiny BERT of tests/factories.py
    assert m["has_tokenizer"] is True
    assert m["num_labels"] == 2
    assert Path(m["weights"]).exists() and (Path(m["config_dir"]) / "config.json").is_file()


# ----------------------------------------------------------------------------- uploads


def test_zip_upload_gives_manifest_and_duplicate_is_stored_once(client, classifier_family):
    body = zip_dir(classifier_family["ft_a"])
    r = put(client, body, tags=json.dumps({"seed": 1, "step": 40, "task": "classification"}))
    assert r.status_code == 201, r.text
    m = r.json()
    assert_manifest(m, "ft-a")
    assert m["tags"] == {"seed": 1, "step": 40, "task": "classification"}
    assert m["source"] == "upload" and m["created"]

    again = put(client, body, name="ft-a-again")
    assert again.status_code == 200
    assert again.json()["id"] == m["id"] and again.json()["name"] == "ft-a"
    state = store_state(client.store_root)
    assert state["checkpoints"] == [m["id"]] and state["tmp"] == []
    assert [c["id"] for c in client.get("/api/checkpoints").json()] == [m["id"]]


def test_tar_gz_upload_in_a_folder_matches_zip_id(client, classifier_family):
    r = put(client, targz_dir(classifier_family["ft_b"], prefix="ft_b/"), name="ft-b")
    assert r.status_code == 201, r.text
    assert_manifest(r.json(), "ft-b")
    # the same weights as a zip are recognised as the same checkpoint
    z = put(client, zip_dir(classifier_family["ft_b"]), name="ft-b-zip")
    assert z.status_code == 200 and z.json()["id"] == r.json()["id"]


def test_bare_safetensors_with_config_checkpoint(client, classifier_family):
    base = put(client, zip_dir(classifier_family["init"]), name="init").json()
    weights = (classifier_family["ft_c"] / "model.safetensors").read_bytes()
    r = put(client, weights, name="ft-c", config=base["id"][:10], tags='{"seed": 3}')
    assert r.status_code == 201, r.text
    m = r.json()
    assert_manifest(m, "ft-c")
    assert m["base"] == base["id"] and m["tags"] == {"seed": 3}
    assert (Path(m["path"]) / "model.safetensors").read_bytes() == weights


def test_bare_safetensors_needs_config(client, classifier_family):
    weights = (classifier_family["ft_c"] / "model.safetensors").read_bytes()
    r = put(client, weights, name="lonely")
    assert r.status_code == 422
    assert "config=" in r.json()["detail"]
    assert store_state(client.store_root) == {"checkpoints": [], "datasets": [], "tmp": []}


def test_bare_safetensors_shape_mismatch_names_tensors(client, classifier_family, tmp_path):
    from safetensors.torch import save_file

    from tests import factories

    put(client, zip_dir(classifier_family["init"]), name="init")
    before = store_state(client.store_root)
    three = factories.init_classifier(0, num_labels=3).state_dict()
    save_file({k: v.contiguous() for k, v in three.items()}, tmp_path / "three.safetensors")
    r = put(client, (tmp_path / "three.safetensors").read_bytes(), name="three", config="init")
    assert r.status_code == 422
    body = r.json()
    assert body["error"] == "IncompatibleCheckpoints"
    assert {m["tensor"] for m in body["mismatches"]} == {"classifier.weight", "classifier.bias"}
    assert store_state(client.store_root) == before


def test_multipart_upload(client, classifier_family):
    files = {"file": ("ft_a.zip", zip_dir(classifier_family["ft_a"]), "application/zip")}
    r = client.post("/api/checkpoints", files=files, data={"tags": '{"step": 10}'})
    assert r.status_code == 201, r.text
    m = r.json()
    assert_manifest(m, "ft_a")  # name defaults to the file name without its suffix
    assert m["tags"] == {"step": 10}
    named = client.post(
        "/api/checkpoints",
        files={
            "file": (
                "w.safetensors",
                (classifier_family["ft_b"] / "model.safetensors").read_bytes(),
            )
        },
        data={"name": "ft-b-bare", "config": "ft_a"},
    )
    assert named.status_code == 201, named.text
    assert named.json()["name"] == "ft-b-bare" and named.json()["base"] == m["id"]
    assert store_state(client.store_root)["tmp"] == []


def test_pytorch_bin_of_plain_tensors_is_accepted(client, classifier_family, tmp_path):
    d = tmp_path / "bin_model"
    d.mkdir()
    (d / "config.json").write_bytes((classifier_family["ft_a"] / "config.json").read_bytes())
    from safetensors.torch import load_file

    torch.save(load_file(classifier_family["ft_a"] / "model.safetensors"), d / "pytorch_model.bin")
    r = put(client, zip_dir(d), name="as-bin")
    assert r.status_code == 201, r.text
    assert r.json()["format"] == "bin" and r.json()["num_parameters"] == 30050


# ----------------------------------------------------------------------------- refusals


def _zip(members: dict[str, bytes], infos: list[zipfile.ZipInfo] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
        for info, data in infos or []:
            zf.writestr(info, data)
    return buf.getvalue()


def _model_members(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def test_truncated_safetensors_is_refused_and_nothing_left(client, classifier_family):
    put(client, zip_dir(classifier_family["init"]), name="init")
    before = store_state(client.store_root)
    weights = (classifier_family["ft_a"] / "model.safetensors").read_bytes()
    r = put(client, weights[:-1000], name="cut", config="init")
    assert r.status_code == 422
    assert "truncated" in r.json()["detail"]
    # the same truncated file inside a model archive
    members = _model_members(classifier_family["ft_a"])
    members["model.safetensors"] = weights[: len(weights) // 2]
    r2 = put(client, _zip(members), name="cut-zip")
    assert r2.status_code == 422 and "truncated" in r2.json()["detail"]
    assert store_state(client.store_root) == before


@pytest.mark.parametrize(
    "case, expect",
    [
        ("corrupt_zip", "corrupt"),
        ("dotdot", ".."),
        ("absolute", "absolute"),
        ("symlink", "symbolic link"),
        ("no_config", "config.json"),
        ("not_an_archive", "unrecognised"),
    ],
)
def test_bad_archive_is_refused_and_nothing_left(client, classifier_family, tmp_path, case, expect):
    members = _model_members(classifier_family["ft_a"])
    if case == "corrupt_zip":
        good = zip_dir(classifier_family["ft_a"])
        body = good[:200] + b"\x00" * 500 + good[700:]
    elif case == "dotdot":
        body = _zip({**members, "../evil": b"pwned"})
    elif case == "absolute":
        body = _zip({**members, "/tmp/basin-evil-abs": b"pwned"})
    elif case == "symlink":
        link = zipfile.ZipInfo("tokenizer_link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        body = _zip(members, [(link, b"/etc/passwd")])
    elif case == "no_config":
        body = _zip({k: v for k, v in members.items() if k != "config.json"})
    else:
        body = b"hello, this is not a checkpoint at all" * 10
    r = put(client, body, name=f"bad-{case}")
    assert r.status_code == 422, r.text
    assert expect in r.json()["detail"]
    assert store_state(client.store_root) == {"checkpoints": [], "datasets": [], "tmp": []}
    assert (
        not (client.store_root / "evil").exists()
        and not (client.store_root.parent / "evil").exists()
    )
    assert not Path("/tmp/basin-evil-abs").exists()


class _Evil:
    """Unpickling this runs ``touch <marker>``: the attack a weights_only load must refuse."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_without_running_it(client, classifier_family, tmp_path):
    marker = tmp_path / "pwned"
    d = tmp_path / "evil_model"
    d.mkdir()
    (d / "config.json").write_bytes((classifier_family["ft_a"] / "config.json").read_bytes())
    torch.save(
        {"bert.embeddings.word_embeddings.weight": torch.zeros(2), "x": _Evil(marker)},
        d / "pytorch_model.bin",
    )
    assert not marker.exists()
    r = put(client, zip_dir(d), name="evil")
    assert r.status_code == 422
    assert "pytorch_model.bin was refused" in r.json()["detail"]
    assert not marker.exists(), "the pickle's code ran"
    assert store_state(client.store_root) == {"checkpoints": [], "datasets": [], "tmp": []}


def test_over_size_cap_is_413_by_header_and_while_streaming(make_client, classifier_family):
    client = make_client(max_upload_bytes=20_000)
    body = zip_dir(classifier_family["ft_a"])
    assert len(body) > 20_000
    r = put(client, body)
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():  # no Content-Length: the cap must trip while reading
        for i in range(0, len(body), 4096):
            yield body[i : i + 4096]

    r2 = client.put("/api/checkpoints", params={"name": "x"}, content=chunks())
    assert r2.status_code == 413
    r3 = client.post("/api/checkpoints", files={"file": ("a.zip", body)})
    assert r3.status_code == 413
    assert store_state(client.store_root) == {"checkpoints": [], "datasets": [], "tmp": []}


# ----------------------------------------------------------------------------- registry


def test_register_in_place_then_inspect_patch_delete(reg_client, classifier_family):
    client = reg_client
    src = classifier_family["ft_b"]
    files_before = sorted(p.name for p in src.iterdir())
    r = client.post(
        "/api/checkpoints/register", json={"path": str(src), "name": "ft-b", "tags": {"seed": 2}}
    )
    assert r.status_code == 201, r.text
    m = r.json()
    assert_manifest(m, "ft-b")
    assert m["source"] == "register" and Path(m["path"]) == src.resolve()
    assert sorted((client.store_root / "checkpoints" / m["id"]).iterdir()) == [
        client.store_root / "checkpoints" / m["id"] / "manifest.json"
    ]  # no copy

    detail = client.get(f"/api/checkpoints/{m['id'][:8]}").json()
    params = detail["parameters"]
    assert params["tensors"] == 57 and params["parameters"] == 30050
    groups = {g["name"]: g["parameters"] for g in params["groups"]}
    assert set(groups) == {"bert", "classifier"} and groups["classifier"] == 66
    assert {g["name"] for g in params["modules"]} >= {
        "bert.embeddings",
        "bert.encoder",
        "classifier",
    }

    p = client.patch(
        "/api/checkpoints/ft-b", json={"name": "seed-2", "tags": {"step": 40, "seed": None}}
    )
    assert p.status_code == 200, p.text
    assert p.json()["name"] == "seed-2" and p.json()["tags"] == {"step": 40}
    assert client.get("/api/checkpoints/seed-2").json()["id"] == m["id"]
    assert client.get("/api/checkpoints/ft-b").status_code == 404

    assert (
        client.patch("/api/checkpoints/seed-2", json={"tags": {"step": "forty"}}).status_code == 422
    )

    d = client.delete("/api/checkpoints/seed-2")
    assert d.status_code == 204
    assert client.get(f"/api/checkpoints/{m['id']}").status_code == 404
    assert sorted(p.name for p in src.iterdir()) == files_before  # the user's files are untouched
    assert store_state(client.store_root)["checkpoints"] == []


def test_registered_dir_removed_later_still_lists_with_problem(
    reg_client, classifier_family, tmp_path
):
    client = reg_client
    src = tmp_path / "gone"
    shutil.copytree(classifier_family["ft_c"], src)
    m = client.post("/api/checkpoints/register", json={"path": str(src), "name": "gone"}).json()
    shutil.rmtree(src)
    r = client.get("/api/checkpoints/gone")
    assert r.status_code == 200
    assert r.json()["parameters"] is None and str(src) in r.json()["problem"]
    assert [c["id"] for c in client.get("/api/checkpoints").json()] == [m["id"]]


def test_register_refuses_missing_or_relative_paths(reg_client, tmp_path):
    client = reg_client
    assert (
        client.post(
            "/api/checkpoints/register", json={"path": "relative/dir", "name": "x"}
        ).status_code
        == 422
    )
    r = client.post("/api/checkpoints/register", json={"path": str(tmp_path / "nope"), "name": "x"})
    assert r.status_code == 422 and "not a folder inside" in r.json()["detail"]


def test_name_clash_is_409(client, classifier_family):
    put(client, zip_dir(classifier_family["ft_a"]), name="model")
    r = put(client, zip_dir(classifier_family["ft_b"]), name="model")
    assert r.status_code == 409 and "already used" in r.json()["detail"]
    assert len(store_state(client.store_root)["checkpoints"]) == 1
    assert store_state(client.store_root)["tmp"] == []


def test_unknown_checkpoint_is_404_json(client):
    for method in ("get", "delete"):
        r = getattr(client, method)("/api/checkpoints/nope")
        assert r.status_code == 404
        assert "no checkpoint named or with id 'nope'" in r.json()["detail"]
    assert client.patch("/api/checkpoints/deadbeef00", json={"name": "x"}).status_code == 404


def test_token_required_for_writes_and_reads(make_client, classifier_family):
    client = make_client(api_token=TOKEN)
    body = zip_dir(classifier_family["ft_a"])
    assert put(client, body).status_code == 401
    assert (
        client.post(
            "/api/checkpoints/register", json={"path": str(classifier_family["ft_a"]), "name": "x"}
        ).status_code
        == 401
    )
    assert store_state(client.store_root)["checkpoints"] == []
    ok = client.put(
        "/api/checkpoints",
        params={"name": "ft-a"},
        content=body,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert ok.status_code == 201
    # with a token set, listing and reading the registry need it too
    assert client.get("/api/checkpoints").status_code == 401
    assert client.get("/api/checkpoints/ft-a").status_code == 401
    auth = {"X-Basin-Token": TOKEN}
    assert client.get("/api/checkpoints", headers=auth).status_code == 200
    assert client.get("/api/checkpoints/ft-a", headers=auth).status_code == 200
    assert client.patch("/api/checkpoints/ft-a", json={"name": "y"}).status_code == 401
    assert client.delete("/api/checkpoints/ft-a").status_code == 401
    assert (
        client.delete("/api/checkpoints/ft-a", headers={"X-Basin-Token": TOKEN}).status_code == 204
    )


def test_aborted_upload_leaves_nothing(tmp_path, classifier_family):
    """A client that drops the connection mid-body: the partial file is removed."""
    root = tmp_path / "store"
    app = create_app(
        Settings(store=root, api_token=None, redis_url="redis://127.0.0.1:1/0"), with_ui=False
    )
    body = zip_dir(classifier_family["ft_a"])
    head = (
        f"PUT /api/checkpoints?name=partial HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with serve(app) as port:
        conn = socket.create_connection(("127.0.0.1", port))
        conn.sendall(head + body[: len(body) // 2])
        # the half-sent body is being streamed to a file under tmp/ ...
        assert wait_for(lambda: bool(file_sizes(root / "tmp")))
        conn.close()
        # ... and disappears when the client goes away
        assert wait_for(lambda: store_state(root)["tmp"] == [])
    assert store_state(root) == {"checkpoints": [], "datasets": [], "tmp": []}
