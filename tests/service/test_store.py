"""``service.store.Store`` directly, on tiny real BERT checkpoints and synthetic datasets."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from basin.checkpoints import load_state_dict
from basin.errors import BasinError, CheckpointError, DatasetError, IncompatibleCheckpoints
from basin.resolve import CheckpointSource, Resolver
from service.store import (
    CheckpointNotFound,
    DatasetNotFound,
    NameTaken,
    Store,
    validate_safetensors,
)


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "store")


def test_layout_is_created(tmp_path):
    Store(tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir() if p.is_dir()) == [
        "artefacts",
        "checkpoints",
        "datasets",
        "runs",
        "tmp",
    ]


def test_add_copy_manifest_and_resolver_by_id_prefix_and_name(store, classifier_family):
    m = store.add_checkpoint_dir(
        classifier_family["ft_a"], name="ft-a", tags={"seed": 1, "step": 40}
    )
    assert m["architecture"] == "BertForSequenceClassification" and m["num_parameters"] == 30050
    assert m["has_tokenizer"] and m["num_labels"] == 2 and m["dtype"] == "float32"
    assert m["tags"] == {"seed": 1, "step": 40} and m["source"] == "upload"
    assert (store.checkpoints_dir / m["id"] / "model.safetensors").is_file()

    resolver = store.resolver()
    assert isinstance(resolver, Resolver)
    for ref in (m["id"], m["id"][:8], "ft-a"):
        src = resolver.checkpoint(ref)
        assert isinstance(src, CheckpointSource) and src.id == m["id"]
    loaded = load_state_dict(resolver.checkpoint("ft-a"))
    original = load_file(classifier_family["ft_a"] / "model.safetensors")
    assert loaded.keys() == original.keys()
    assert all(torch.equal(loaded[k], original[k]) for k in original)

    with pytest.raises(CheckpointNotFound, match="at least 8"):
        resolver.checkpoint(m["id"][:6])
    with pytest.raises(CheckpointError, match="no checkpoint named"):
        resolver.checkpoint("ft-z")


def test_same_weights_are_stored_once(store, classifier_family):
    first = store.import_checkpoint(classifier_family["ft_a"], name="a")
    second = store.import_checkpoint(classifier_family["ft_a"], name="a-again")
    assert first.created and not second.created
    assert second.manifest["id"] == first.manifest["id"] and second.manifest["name"] == "a"
    assert [p.name for p in store.checkpoints_dir.iterdir()] == [first.manifest["id"]]
    assert list(store.tmp_dir.iterdir()) == []


def test_ambiguous_prefix_is_refused(store, classifier_family):
    m = store.add_checkpoint_dir(classifier_family["ft_a"], name="real")
    for fake, name in (("abcdef12" + "0" * 56, "f0"), ("abcdef12" + "1" * 56, "f1")):
        shutil.copytree(store.checkpoints_dir / m["id"], store.checkpoints_dir / fake)
        raw = json.loads((store.checkpoints_dir / fake / "manifest.json").read_text())
        (store.checkpoints_dir / fake / "manifest.json").write_text(
            json.dumps({**raw, "id": fake, "name": name})
        )
    with pytest.raises(CheckpointNotFound, match="ambiguous"):
        store.get_checkpoint("abcdef12")
    assert store.get_checkpoint("abcdef121")["name"] == "f1"


def test_register_in_place_and_delete_keeps_files(store, classifier_family):
    src = classifier_family["ft_b"]
    m = store.add_checkpoint_dir(src, name="ft-b", copy=False)
    assert m["source"] == "register" and m["path"] == str(src.resolve())
    assert store.resolver().checkpoint("ft-b").weights == src.resolve()
    store.delete_checkpoint("ft-b")
    assert (src / "model.safetensors").is_file()
    with pytest.raises(CheckpointNotFound):
        store.get_checkpoint("ft-b")


def test_add_safetensors_checks_keys_and_shapes(store, classifier_family, tmp_path):
    store.add_checkpoint_dir(classifier_family["init"], name="init")
    m = store.add_safetensors(
        classifier_family["ft_c"] / "model.safetensors", config_ref="init", name="c"
    )
    assert m["architecture"] == "BertForSequenceClassification" and m["has_tokenizer"]
    assert m["base"] == store.get_checkpoint("init")["id"]

    sd = load_file(classifier_family["ft_c"] / "model.safetensors")
    sd["classifier.weight"] = torch.zeros(3, 32)
    del sd["classifier.bias"]
    save_file(sd, tmp_path / "odd.safetensors")
    with pytest.raises(IncompatibleCheckpoints) as e:
        store.add_safetensors(tmp_path / "odd.safetensors", config_ref="init", name="odd")
    assert {n for n, _ in e.value.mismatches} == {"classifier.weight", "classifier.bias"}
    assert len(store.list_checkpoints()) == 2 and list(store.tmp_dir.iterdir()) == []


def test_validate_safetensors_refuses_truncated_and_padded(classifier_family, tmp_path):
    good = (classifier_family["ft_a"] / "model.safetensors").read_bytes()
    assert len(validate_safetensors(classifier_family["ft_a"] / "model.safetensors")) == 57
    cases = {"cut": good[:-4], "pad": good + b"\0" * 16, "head": good[:20], "tiny": good[:5]}
    messages = {
        "cut": "truncated",
        "pad": "after the last tensor",
        "head": "truncated",
        "tiny": "8 bytes",
    }
    for case, data in cases.items():
        (tmp_path / f"{case}.safetensors").write_bytes(data)
        with pytest.raises(CheckpointError, match=messages[case]):
            validate_safetensors(tmp_path / f"{case}.safetensors")


def test_missing_config_and_bad_config_are_refused(store, classifier_family, tmp_path):
    d = tmp_path / "noconf"
    d.mkdir()
    shutil.copy(classifier_family["ft_a"] / "model.safetensors", d)
    with pytest.raises(CheckpointError, match="config.json is missing"):
        store.add_checkpoint_dir(d, name="x")
    (d / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(CheckpointError, match="does not load with transformers"):
        store.add_checkpoint_dir(d, name="x")
    assert store.list_checkpoints() == [] and list(store.tmp_dir.iterdir()) == []


def test_names_are_unique_and_update_merges_tags(store, classifier_family):
    store.add_checkpoint_dir(classifier_family["ft_a"], name="a", tags={"seed": 1, "task": "sst"})
    # a null tag on creation is "not set" (the demo's pre-trained init has no seed)
    b = store.add_checkpoint_dir(classifier_family["ft_b"], name="b", tags={"seed": None, "step": 0})
    assert b["tags"] == {"step": 0}
    with pytest.raises(NameTaken):
        store.add_checkpoint_dir(classifier_family["ft_c"], name="a")
    with pytest.raises(NameTaken):
        store.update_checkpoint("b", name="a")
    m = store.update_checkpoint("a", name="a1", tags={"step": 5, "task": None})
    assert m["name"] == "a1" and m["tags"] == {"seed": 1, "step": 5}
    with pytest.raises(CheckpointError, match="integer"):
        store.update_checkpoint("a1", tags={"seed": "one"})
    assert [c["name"] for c in store.list_checkpoints()] == ["b", "a1"]  # newest first
    assert store.get_checkpoint(b["id"][:10])["name"] == "b"


def test_store_can_move(tmp_path, classifier_family):
    s = Store(tmp_path / "one")
    m = s.add_checkpoint_dir(classifier_family["ft_a"], name="a")
    ds = s.add_dataset(classifier_family["data"], name="eval.csv")
    (tmp_path / "one").rename(tmp_path / "two")
    moved = Store(tmp_path / "two")
    src = moved.resolver().checkpoint("a")
    assert src.id == m["id"] and src.weights.is_relative_to(tmp_path / "two")
    assert moved.resolver().dataset(ds["id"]).read_bytes() == classifier_family["data"].read_bytes()


def test_datasets(store, classifier_family, gpt2_pair, tmp_path):
    d = store.add_dataset(classifier_family["data"], name="eval.csv", task="classification")
    assert d["rows"] == 64 and d["columns"] == ["text", "label"] and d["task"] == "classification"
    path = store.resolver().dataset("eval.csv")
    assert path.read_bytes() == classifier_family["data"].read_bytes()
    assert store.resolver().dataset(d["id"][:8]) == path
    prev = store.preview_dataset("eval.csv", n=2)
    assert (
        len(prev["rows"]) == 2 and prev["total"] == 64 and set(prev["rows"][0]) == {"text", "label"}
    )

    lm = store.add_dataset(gpt2_pair["data"], name="lm.jsonl")
    assert lm["tasks"] == ["causal_lm"]
    with pytest.raises(DatasetError, match="cannot serve task"):
        store.update_dataset("lm.jsonl", task="seq2seq")
    bad = tmp_path / "x.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match=r"columns \(a, b\) allow no task"):
        store.add_dataset(bad, name="x.csv")
    store.delete_dataset("lm.jsonl")
    with pytest.raises(DatasetNotFound):
        store.resolver().dataset("lm.jsonl")
    assert [x["name"] for x in store.list_datasets()] == ["eval.csv"]
    assert list(store.tmp_dir.iterdir()) == []


def test_runs_roundtrip(store):
    doc = {
        "spec": {
            "path": {"type": "linear", "a": "x", "b": "y"},
            "task": "classification",
            "dataset": "d",
        },
        "points": [{"index": 0}, {"index": 1}],
        "summary": {},
    }
    path = store.save_run("run_abc123", doc)
    assert path == store.runs_dir / "run_abc123.json"
    assert store.load_run("run_abc123") == doc
    entry = store.list_runs()[0]
    assert (
        entry["id"] == "run_abc123" and entry["points"] == 2 and entry["checkpoints"] == ["x", "y"]
    )
    assert entry["type"] == "linear"
    assert store.load_run("missing") is None and store.load_run("../etc/passwd") is None
    with pytest.raises(BasinError, match="invalid run id"):
        store.save_run("../escape", doc)
    store.delete_run("run_abc123")
    assert store.load_run("run_abc123") is None and store.list_runs() == []
    assert [p.name for p in store.runs_dir.iterdir()] == ["index.json"]
    with pytest.raises(BasinError, match="invalid run id"):
        store.save_run("index", doc)  # would overwrite the runs index


def _doc(status="done", created=1.0, n=2):
    return {
        "spec": {"path": {"type": "linear", "a": "x", "b": "y"}, "task": "classification",
                 "dataset": "d"},
        "points": [{"index": i} for i in range(n)],
        "status": status,
        "created": created,
        "total": n,
    }


def test_the_runs_list_reads_the_index_not_the_documents(store):
    store.save_run("run_old", _doc(created=1.0))
    store.save_run("run_new", _doc(status="failed", created=2.0, n=1))
    # a document damaged on disk is not read by the list: its entry stays as it was saved
    (store.runs_dir / "run_old.json").write_text("{not json")
    listed = store.list_runs()
    assert [e["id"] for e in listed] == ["run_new", "run_old"]
    assert listed[0]["status"] == "failed" and listed[0]["points"] == 1
    assert listed[1]["spec"]["dataset"] == "d" and listed[1]["total"] == 2
    store.delete_run("run_new")
    assert [e["id"] for e in store.list_runs()] == ["run_old"]


def test_a_missing_or_corrupt_index_is_rebuilt_skipping_unreadable_documents(store):
    store.save_run("run_good", _doc())
    store.save_run("run_bad", _doc())
    (store.runs_dir / "run_bad.json").write_text("{not json")
    for damage in ("{corrupt", '{"version": 99, "runs": {}}', None):
        if damage is None:
            store.runs_index_path.unlink()
        else:
            store.runs_index_path.write_text(damage)
        assert [e["id"] for e in store.list_runs()] == ["run_good"]
        assert json.loads(store.runs_index_path.read_text())["runs"].keys() == {"run_good"}
    # a second store on the same folder (another process) sees the same list
    assert [e["id"] for e in Store(store.root).list_runs()] == ["run_good"]


def test_a_document_copied_in_joins_the_index_and_a_removed_one_leaves_it(store):
    store.save_run("run_saved", _doc(created=1.0))
    (store.runs_dir / "run_copied.json").write_text(json.dumps(_doc(created=2.0, n=3)))
    listed = store.list_runs()
    assert [e["id"] for e in listed] == ["run_copied", "run_saved"] and listed[0]["points"] == 3
    assert "run_copied" in json.loads(store.runs_index_path.read_text())["runs"]
    (store.runs_dir / "run_saved.json").unlink()
    assert [e["id"] for e in store.list_runs()] == ["run_copied"]


def test_pickle_code_in_bin_is_never_run(store, classifier_family, tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    d = tmp_path / "evil"
    d.mkdir()
    shutil.copy(classifier_family["ft_a"] / "config.json", d)
    torch.save({"w": Evil()}, d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused"):
        store.add_checkpoint_dir(d, name="evil")
    assert not marker.exists()
    assert store.list_checkpoints() == []
