"""Checkpoints by Hub id, in-process: :func:`service.hub.import_from_hub` and the CLI's
:func:`basin.hub.snapshot` against a local Hub-compatible endpoint (:mod:`tests.hubserver`)
serving tiny real BERT classifiers (:mod:`tests.factories`). The real API + worker path is
``tests/integration/test_hub_stack.py``."""

from __future__ import annotations

import hashlib
import pickle
import socket

import pytest
import torch
from safetensors.torch import load_file

from basin.hub import (
    HubError,
    HubHashMismatch,
    HubNoSafetensors,
    HubNotFound,
    HubTooLarge,
    HubUnreachable,
    parse_hub_ref,
)
from basin.resolve import FileResolver
from service.errors import CheckpointNotFound
from service.hub import import_from_hub
from service.store import Store
from tests.hubserver import HubServer


@pytest.fixture
def hub(classifier_family):
    with HubServer() as server:
        server.add("org/tiny-bert", classifier_family["ft_a"])
        yield server


def _sha256(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _resolves(hub: HubServer) -> int:
    return sum(1 for _, p, _ in hub.requests if "/resolve/" in p)


def test_a_hub_id_is_fetched_pinned_checked_and_stored_once(hub, classifier_family, tmp_path):
    store = Store(tmp_path / "store")
    repo = hub.repos["org/tiny-bert"]
    added, commit = import_from_hub(store, "org/tiny-bert", endpoint=hub.url)
    m = added.manifest
    assert added.created and commit == repo.commit
    assert m["tags"] == {
        "hub_repo": "org/tiny-bert",
        "hub_revision": repo.commit,
        "hub_ref": "main",
    }
    assert m["source"] == "hub" and m["name"] == f"tiny-bert@{repo.commit[:8]}"
    stored = store.resolver().checkpoint(m["id"]).weights
    assert _sha256(stored / "model.safetensors") == _sha256(
        classifier_family["ft_a"] / "model.safetensors"
    )
    assert not list(stored.glob("*.bin")) and not (stored / ".download").exists()
    # every file was asked for at the pinned commit, never at the moving branch
    assert all(f"/resolve/{repo.commit}/" in p for _, p, _ in hub.requests if "/resolve/" in p)
    # fetched once: asking again (by branch or by commit) downloads nothing
    n = _resolves(hub)
    again, _ = import_from_hub(store, "org/tiny-bert@main", endpoint=hub.url)
    by_sha, _ = import_from_hub(store, f"org/tiny-bert@{repo.commit}", endpoint=hub.url)
    assert (
        not again.created
        and not by_sha.created
        and again.manifest["id"] == by_sha.manifest["id"] == m["id"]
    )
    assert _resolves(hub) == n
    assert len(store.list_checkpoints()) == 1
    # a spec's hf: reference names it (by branch as asked, by commit prefix)
    assert store.get_checkpoint("hf:org/tiny-bert@main")["id"] == m["id"]
    assert store.get_checkpoint(f"hf:org/tiny-bert@{repo.commit[:8]}")["id"] == m["id"]
    with pytest.raises(CheckpointNotFound, match="not in the store yet: fetch it first"):
        store.get_checkpoint("hf:org/other@main")


def test_a_corrupted_file_is_refused_and_nothing_is_stored(hub, classifier_family, tmp_path):
    hub.add("org/tampered", classifier_family["ft_b"], corrupt={"model.safetensors"})
    store = Store(tmp_path / "store")
    with pytest.raises(
        HubHashMismatch,
        match=r"model.safetensors .*does not match the Hub's sha256.*nothing stored",
    ):
        import_from_hub(store, "org/tampered", endpoint=hub.url)
    assert store.list_checkpoints() == []
    assert list(store.tmp_dir.iterdir()) == []
    hub.add(
        "org/tampered-config", classifier_family["ft_b"], corrupt={"config.json"}
    )  # a small (git) file
    with pytest.raises(HubHashMismatch, match="config.json .*git blob id"):
        import_from_hub(store, "org/tampered-config", endpoint=hub.url)
    assert store.list_checkpoints() == [] and list(store.tmp_dir.iterdir()) == []
    # a mirror whose model info has no hashes: each file's ETag at the commit is checked instead
    hub.add(
        "org/bare-tampered", classifier_family["ft_b"], corrupt={"model.safetensors"}
    ).hashes_in_info = False
    with pytest.raises(
        HubHashMismatch, match="model.safetensors .*does not match the Hub's sha256"
    ):
        import_from_hub(store, "org/bare-tampered", endpoint=hub.url)
    assert store.list_checkpoints() == []
    hub.add("org/bare", classifier_family["ft_b"]).hashes_in_info = False
    added, _ = import_from_hub(store, "org/bare", endpoint=hub.url)
    assert added.created and added.manifest["tags"]["hub_revision"] == hub.repos["org/bare"].commit


def _bin_only(folder, tmp_path, name="bin-only"):
    out = tmp_path / name
    out.mkdir()
    for p in folder.iterdir():
        if p.name != "model.safetensors":
            (out / p.name).write_bytes(p.read_bytes())
    torch.save(load_file(str(folder / "model.safetensors")), out / "pytorch_model.bin")
    return out


def test_a_repo_with_only_pytorch_model_bin_is_refused_unless_converted_safely(
    hub, classifier_family, tmp_path
):
    hub.add("org/old-bert", _bin_only(classifier_family["ft_c"], tmp_path))
    store = Store(tmp_path / "store")
    n = _resolves(hub)
    with pytest.raises(HubNoSafetensors, match="only pytorch_model.bin .*allow_bin"):
        import_from_hub(store, "org/old-bert", endpoint=hub.url)
    assert _resolves(hub) == n and store.list_checkpoints() == []  # refused before any download
    added, _ = import_from_hub(store, "org/old-bert", endpoint=hub.url, allow_bin=True)
    folder = store.resolver().checkpoint(added.manifest["id"]).weights
    assert (folder / "model.safetensors").is_file() and not list(folder.glob("*.bin"))
    want = load_file(str(classifier_family["ft_c"] / "model.safetensors"))
    got = load_file(str(folder / "model.safetensors"))
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
    # a .bin that carries code is refused by the weights-only loader; the code never runs
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = _bin_only(classifier_family["ft_c"], tmp_path, "evil")
    (evil / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Evil()}))
    hub.add("org/evil", evil)
    with pytest.raises(HubError):
        import_from_hub(store, "org/evil", endpoint=hub.url, allow_bin=True)
    assert not marker.exists() and len(store.list_checkpoints()) == 1


def test_clear_errors_for_unknown_private_missing_revision_offline_and_too_large(
    hub, classifier_family, tmp_path, monkeypatch
):
    store = Store(tmp_path / "store")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(HubNotFound, match="no model repository 'org/nope'"):
        import_from_hub(store, "org/nope", endpoint=hub.url)
    hub.add("org/private", classifier_family["ft_b"], private_token="hf_secret")
    with pytest.raises(HubNotFound, match="private or gated and no token was given: set HF_TOKEN"):
        import_from_hub(store, "org/private", endpoint=hub.url)
    with pytest.raises(HubNotFound, match="token in HF_TOKEN may not read it"):
        import_from_hub(store, "org/private", endpoint=hub.url, token="hf_wrong")
    with pytest.raises(HubNotFound, match="has no revision 'v9'"):
        import_from_hub(store, "org/tiny-bert@v9", endpoint=hub.url)
    with socket.socket() as s:  # a port nothing listens on: the network is "down"
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(HubUnreachable, match=f"cannot reach the Hub at {dead}"):
        import_from_hub(store, "org/tiny-bert", endpoint=dead)
    n = _resolves(hub)
    with pytest.raises(HubTooLarge, match="over the 1,000 allowed"):
        import_from_hub(store, "org/tiny-bert", endpoint=hub.url, max_bytes=1000)
    assert _resolves(hub) == n
    with pytest.raises(HubError, match="not a Hub model id"):
        parse_hub_ref("org/../etc")
    assert store.list_checkpoints() == [] and list(store.tmp_dir.iterdir()) == []


def test_hf_endpoint_and_hf_token_are_honoured(hub, classifier_family, tmp_path, monkeypatch):
    hub.add("org/private", classifier_family["ft_b"], private_token="hf_secret")
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    store = Store(tmp_path / "store")
    added, _ = import_from_hub(store, "org/private")
    assert added.created
    sent = hub.auths("org/private")
    assert sent and set(sent) == {"Bearer hf_secret"}  # the info and every file carried it


def test_the_cli_resolves_hf_references_into_a_checked_local_snapshot(
    hub, classifier_family, tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("BASIN_HUB_CACHE", str(tmp_path / "cache"))
    repo = hub.repos["org/tiny-bert"]
    src = FileResolver(tmp_path).checkpoint("hf:org/tiny-bert@main")
    assert src.weights == tmp_path / "cache" / "org--tiny-bert" / repo.commit
    assert _sha256(src.weights / "model.safetensors") == _sha256(
        classifier_family["ft_a"] / "model.safetensors"
    )
    n = len(hub.requests)
    assert (
        FileResolver(tmp_path).checkpoint(f"hf:org/tiny-bert@{repo.commit}").weights == src.weights
    )
    assert len(hub.requests) == n  # a cached commit: no request at all


def test_content_uploaded_before_is_not_stored_twice_and_gains_the_hub_origin(
    hub, classifier_family, tmp_path
):
    store = Store(tmp_path / "store")
    uploaded = store.add_checkpoint_dir(classifier_family["ft_a"], name="my ft_a", tags={"seed": 1})
    added, commit = import_from_hub(store, "org/tiny-bert", endpoint=hub.url)
    assert not added.created and added.manifest["id"] == uploaded["id"]
    assert added.manifest["name"] == "my ft_a" and len(store.list_checkpoints()) == 1
    assert added.manifest["tags"] == {
        "seed": 1,
        "hub_repo": "org/tiny-bert",
        "hub_revision": commit,
        "hub_ref": "main",
    }
    assert store.get_checkpoint("hf:org/tiny-bert@main")["id"] == uploaded["id"]


@pytest.mark.parametrize(
    "change, says",
    [
        ({"target_modules": r"^((\w|\.)+)+!$"}, "regular expression"),
        (
            {"peft_type": "XLORA", "adapters": {"0": "/etc", "1": "/root/.ssh"}},
            "is not one Basin takes",
        ),
        ({"r": 10**9}, "r"),
        ({"layers_to_transform": list(range(100_000))}, "larger than 256 KiB"),
    ],
    ids=["regex", "path_loading_type", "huge_rank", "huge_list"],
)
def test_a_hostile_adapter_from_the_hub_is_refused_like_an_upload(
    classifier_family, lora_family, tmp_path, change, says
):
    """Issue 24 part 1 on the Hub: an adapter fetched from a Hub repository is a third-party
    config like an uploaded one; the store's import checks it the same way (allow-list, the
    sandboxed peft check) — refused with the reason, nothing stored, no server path named."""
    import json
    import shutil

    from basin.errors import BasinError

    store = Store(tmp_path / "store")
    store.add_checkpoint_dir(classifier_family["ft_a"], name="ft_a")
    evil = tmp_path / "evil"
    shutil.copytree(lora_family["lora_a"], evil)
    cfg = json.loads((evil / "adapter_config.json").read_text())
    if change.get("peft_type") not in (None, "LORA"):
        cfg = {"base_model_name_or_path": cfg["base_model_name_or_path"]}
    cfg.update(change)
    cfg["base_model_name_or_path"] = "org/ft_a"  # the store's ft_a, by its last component
    (evil / "adapter_config.json").write_text(json.dumps(cfg))
    with HubServer() as hub:
        hub.add("org/evil-lora", evil)
        with pytest.raises(BasinError) as e:
            import_from_hub(store, "org/evil-lora", endpoint=hub.url)
    assert says in str(e.value), str(e.value)
    assert "/etc" not in str(e.value) and "/root" not in str(e.value)
    assert [m["name"] for m in store.list_checkpoints()] == ["ft_a"]
