"""Lean memory: checkpoints read tensor by tensor (:class:`basin.checkpoints.LazyStateDict`),
so building a plane never holds a whole endpoint beside the model and the basis."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from basin import FileResolver, Landscape
from basin.checkpoints import CheckpointError, LazyStateDict, load_state_dict
from tests.core import helpers


def _formats(src, tmp_path):
    """The same weights as one safetensors file, two shards and a pickle-free ``.bin``."""
    sd = load_state_dict(src)
    out = {"single": src}
    for name in ("sharded", "bin"):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(src / "config.json", d / "config.json")
        out[name] = d
    keys = sorted(sd)
    parts = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for fname, ks in parts.items():
        save_file({k: sd[k].contiguous() for k in ks}, str(out["sharded"] / fname))
    (out["sharded"] / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {k: f for f, ks in parts.items() for k in ks}}))
    torch.save(sd, out["bin"] / "pytorch_model.bin")
    return sd, out


def test_a_lazy_state_dict_reads_the_same_tensors_one_at_a_time(classifier_family, tmp_path):
    sd, dirs = _formats(classifier_family["ft_a"], tmp_path)
    for fmt, d in dirs.items():
        lazy = LazyStateDict(d)
        assert set(lazy) == set(sd) and lazy.reads == 0, fmt  # opening reads headers only
        if fmt != "bin":  # nothing of the weights is held: only offsets
            assert not any(isinstance(v, torch.Tensor) for v in vars(lazy).values())
        for k, t in sd.items():
            assert lazy.meta(k) == (tuple(t.shape), t.dtype)
            got = lazy[k]
            assert torch.equal(got, t) and got.dtype == t.dtype, (fmt, k)
            got.add_(1.0) if got.is_floating_point() else None  # a fresh tensor: the next read is unchanged
            assert torch.equal(lazy[k], t)
        assert lazy.reads == 2 * len(sd)
    renamed = LazyStateDict(dirs["single"]).renamed({"classifier.weight": "head.weight"})
    assert "head.weight" in renamed and "classifier.weight" not in renamed
    assert torch.equal(renamed["head.weight"], sd["classifier.weight"])


def test_a_truncated_safetensors_file_is_refused_when_read(classifier_family, tmp_path):
    d = tmp_path / "cut"
    shutil.copytree(classifier_family["ft_a"], d)
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-64])
    with pytest.raises(CheckpointError, match="truncated"):  # the header check (basin.formats) sees it
        LazyStateDict(d)
    shutil.copy(classifier_family["ft_a"] / "model.safetensors", f)
    lazy = LazyStateDict(d)
    f.write_bytes(f.read_bytes()[:-64])  # cut after opening: the read itself refuses it
    with pytest.raises(CheckpointError, match="truncated"):
        for k in lazy:
            lazy[k]


def test_a_plane_through_lazy_checkpoints_equals_the_eager_one(classifier_family):
    """The CLI (no cache: lazy) and a worker (CheckpointCache: resident) build the same plane."""
    from basin.checkpoints import CheckpointCache

    root = classifier_family["data"].parent
    spec = helpers.cpu_spec({"path": {"type": "plane", "a": "ft_a", "b": "ft_b", "c": "ft_c",
                                      "resolution": [3, 3]}, "dataset": "eval.csv"})
    with Landscape.open(spec, FileResolver(root)) as lazy, \
            Landscape.open(spec, FileResolver(root), cache=CheckpointCache(4)) as eager:
        for p in (0, 4, 8):
            assert lazy.evaluate(lazy.point(p))["loss"] == pytest.approx(eager.evaluate(eager.point(p))["loss"],
                                                                         abs=1e-6)
        assert lazy.axes[0] == pytest.approx(eager.axes[0]) and lazy.axes[1] == pytest.approx(eager.axes[1])


def test_building_a_plane_holds_no_whole_endpoint(tmp_path):
    """Memory probe (a subprocess's peak resident set, not a timing): opening a plane through
    three ~30 M-parameter checkpoints uses at most 1.1 × (live model + origin + two
    directions) beyond the process's baseline; holding the endpoints whole (a checkpoint
    cache) needs far more."""
    from bench import memory

    info = memory.build(tmp_path / "m", 30e6)
    theory = 4 * 4 * info["params"]
    lazy = memory.measure(tmp_path / "m", "lazy")
    assert (lazy["peak"] - lazy["baseline"]) <= 1.1 * theory, (lazy, theory)
    eager = memory.measure(tmp_path / "m", "eager")
    assert (eager["peak"] - eager["baseline"]) > 1.3 * theory, (eager, theory)
    # a worker's cache bounded by bytes (room for all three here): beyond what it holds, no more than the CLI
    worker = memory.measure(tmp_path / "m", "worker", cache_bytes=4 * theory)
    assert worker["cache_bytes"] == pytest.approx(0.75 * theory, rel=0.01)  # the three stayed resident
    assert (worker["peak"] - worker["baseline"]) <= 1.1 * (theory + worker["cache_bytes"]), (worker, theory)
