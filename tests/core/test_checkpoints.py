"""Checkpoint formats, safe loading, inspection, compatibility and the LRU cache."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from basin import FileResolver, Landscape
from basin.checkpoints import (
    CheckpointCache,
    check_compatible,
    inspect_checkpoint,
    load_state_dict,
    tensor_meta,
)
from basin.errors import CheckpointError, IncompatibleCheckpoints
from basin.resolve import CheckpointSource
from tests import factories
from tests.core import helpers


class _Evil:
    """Pickles to "call open(flag, 'w')" — executing it would create the flag file."""

    def __init__(self, flag):
        self.flag = str(flag)

    def __reduce__(self):
        return (open, (self.flag, "w"))


def _copy_config(src, dst):
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.suffix != ".safetensors":
            shutil.copy(f, dst / f.name)
    return dst


def test_malicious_pickle_is_refused_without_running(classifier_family, tmp_path):
    d = _copy_config(classifier_family["ft_a"], tmp_path / "evil")
    flag = tmp_path / "pwned"
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(2), "x": _Evil(flag)},
               d / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="refused"):
        load_state_dict(d)
    with pytest.raises(CheckpointError):
        check_compatible([d, classifier_family["ft_b"]])
    assert not flag.exists()


def test_plain_bin_is_accepted_and_equals_safetensors(classifier_family, tmp_path):
    d = _copy_config(classifier_family["ft_b"], tmp_path / "binb")
    sd = load_state_dict(classifier_family["ft_b"])
    torch.save(sd, d / "pytorch_model.bin")
    loaded = load_state_dict(d)
    assert loaded.keys() == sd.keys() and all(torch.equal(loaded[k], sd[k]) for k in sd)
    assert inspect_checkpoint(d).format == "bin"
    root = classifier_family["data"].parent
    spec = helpers.cpu_spec({"path": {"type": "linear", "a": "ft_a", "b": str(d), "points": 2},
                       "dataset": "eval.csv"})
    land = Landscape.open(spec, FileResolver(root))
    want = helpers.classify(classifier_family["ft_b"], sd, classifier_family["data"])
    assert land.evaluate({"alpha": 1.0})["loss"] == pytest.approx(want["loss"], abs=1e-5)
    land.close()


def test_sharded_and_bare_safetensors(classifier_family, tmp_path):
    sd = load_state_dict(classifier_family["ft_a"])
    d = _copy_config(classifier_family["ft_a"], tmp_path / "sharded")
    keys = sorted(sd)
    half = len(keys) // 2
    parts = {"model-00001-of-00002.safetensors": keys[:half], "model-00002-of-00002.safetensors": keys[half:]}
    for fname, ks in parts.items():
        save_file({k: sd[k].contiguous() for k in ks}, str(d / fname))
    wm = {k: f for f, ks in parts.items() for k in ks}
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    got = load_state_dict(d)
    assert got.keys() == sd.keys() and all(torch.equal(got[k], sd[k]) for k in sd)
    assert inspect_checkpoint(d).format == "sharded"

    bare = tmp_path / "bare" / "weights.safetensors"
    bare.parent.mkdir()
    save_file(sd, str(bare))
    src = FileResolver().checkpoint(f"{bare}::{classifier_family['ft_a']}")
    assert src.config_dir == classifier_family["ft_a"].resolve() and src.weights == bare.resolve()
    assert torch.equal(load_state_dict(src)["classifier.weight"], sd["classifier.weight"])
    with pytest.raises(CheckpointError, match="no config.json"):
        FileResolver().checkpoint(str(bare))
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_state_dict(d)


def test_inspect_reads_headers(classifier_family, gpt2_pair):
    info = inspect_checkpoint(classifier_family["ft_a"])
    model = factories.init_classifier(0)
    assert info.architecture == "BertForSequenceClassification"
    assert info.model_type == "bert" and info.num_labels == 2 and info.dtype == "float32"
    assert info.num_parameters == sum(p.numel() for p in model.parameters())
    assert info.has_tokenizer and info.format == "safetensors"
    g = inspect_checkpoint(gpt2_pair["a"])
    assert g.model_type == "gpt2" and g.num_labels is None
    assert set(g.to_dict()) >= {"architecture", "num_parameters", "dtype", "has_tokenizer", "config"}


def test_missing_and_garbage_checkpoints(tmp_path, classifier_family):
    with pytest.raises(CheckpointError, match="not found"):
        FileResolver(tmp_path).checkpoint("nope")
    d = _copy_config(classifier_family["ft_a"], tmp_path / "garbage")
    (d / "model.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00hello")
    with pytest.raises(CheckpointError, match="safetensors"):
        tensor_meta(d)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError, match="no weights"):
        load_state_dict(empty)


@pytest.fixture(scope="module")
def three_labels(tmp_path_factory):
    m = factories.init_classifier(0, num_labels=3)
    return factories.save(m, tmp_path_factory.mktemp("nl3") / "bert3", factories.make_tokenizer())


def test_mismatch_names_tensors_and_hold_runs(classifier_family, three_labels):
    mism = check_compatible([classifier_family["ft_a"], three_labels])
    names = [k for k, _ in mism]
    assert "classifier.weight" in names and "classifier.bias" in names
    assert check_compatible([classifier_family["ft_a"], classifier_family["ft_b"]]) == []
    root = classifier_family["data"].parent
    path = {"type": "linear", "a": "ft_a", "b": str(three_labels), "points": 3}
    with pytest.raises(IncompatibleCheckpoints, match="classifier.weight") as ei:
        Landscape.open(helpers.cpu_spec({"path": path, "dataset": "eval.csv"}), FileResolver(root))
    assert {k for k, _ in ei.value.mismatches} == set(names)
    land = Landscape.open(helpers.cpu_spec({"path": path, "dataset": "eval.csv", "on_mismatch": "hold"}),
                          FileResolver(root))
    a = helpers.state(classifier_family["ft_a"])
    land.evaluate({"alpha": 1.0})
    live = dict(land.model.named_parameters())
    assert torch.equal(live["classifier.weight"], a["classifier.weight"])  # held at θA
    b = helpers.state(three_labels)
    k = "bert.encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(live[k], b[k])  # the rest moved to θB
    land.close()


def test_cache_is_lru_by_id(classifier_family):
    cache = CheckpointCache(max_items=2)
    srcs = [CheckpointSource.from_path(classifier_family[k]) for k in ("ft_a", "ft_b", "ft_c")]
    first = cache.get(srcs[0])
    assert cache.get(srcs[0]) is first and cache.hits == 1
    cache.get(srcs[1])
    cache.get(srcs[0])  # a is now most recent
    cache.get(srcs[2])  # evicts b
    assert srcs[0] in cache and srcs[2] in cache and srcs[1] not in cache and len(cache) == 2
    root = classifier_family["data"].parent
    spec = helpers.cpu_spec({"path": {"type": "linear", "a": "ft_a", "b": "ft_c", "points": 2}, "dataset": "eval.csv"})
    before = cache.misses
    land = Landscape.open(spec, FileResolver(root), cache=cache)
    land.evaluate({"alpha": 0.5})
    land.close()
    assert cache.misses == before  # both came from the cache
    assert torch.equal(cache.get(srcs[0])["classifier.weight"], helpers.state(classifier_family["ft_a"])["classifier.weight"])
