"""The engine on a GPU: same numbers as the CPU, in place on the device, bf16 autocast by default.

Skipped without CUDA (CI has none); run on a GPU machine with
``pytest tests/gpu -q``.
"""

from __future__ import annotations

import pytest
import torch

from basin import FileResolver, Landscape, run
from basin.spec import parse_spec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _spec(path: dict, **kw) -> object:
    return parse_spec({"path": path, "dataset": "eval.csv", "metrics": ["loss", "accuracy"], **kw})


@pytest.fixture(scope="module")
def root(classifier_family):
    return classifier_family["data"].parent


def test_fp32_on_cuda_equals_cpu_along_a_linear_path(root):
    path = {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 9, "range": [-0.5, 1.5]}
    cpu = run(_spec(path, device="cpu", dtype="float32"), FileResolver(root), progress=False)
    gpu = run(_spec(path, device="cuda", dtype="float32"), FileResolver(root), progress=False)
    assert gpu["timings"]["device"].startswith("cuda")
    for c, g in zip(cpu["points"], gpu["points"], strict=True):
        assert c["coords"] == g["coords"]
        assert g["metrics"]["loss"] == pytest.approx(c["metrics"]["loss"], abs=1e-4)
        assert g["metrics"]["accuracy"] == pytest.approx(c["metrics"]["accuracy"], abs=1e-6)


def test_auto_dtype_uses_bf16_autocast_and_stays_close(root):
    path = {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 5}
    cpu = run(_spec(path, device="cpu"), FileResolver(root), progress=False)
    land = Landscape.open(_spec(path, device="auto"), FileResolver(root))
    try:
        assert land.device.type == "cuda"
        assert "bf16" in land.precision
        for c in cpu["points"]:
            g = land.evaluate(land.point(c["index"]))
            assert g["loss"] == pytest.approx(c["metrics"]["loss"], abs=2e-2)
    finally:
        land.close()


def test_mixing_happens_on_the_device_without_reallocating(root):
    spec = _spec({"type": "plane", "a": "ft_a", "b": "ft_b", "c": "ft_c", "resolution": [3, 3]},
                 device="cuda")
    land = Landscape.open(spec, FileResolver(root))
    try:
        params = dict(land.model.named_parameters())
        ptrs = {k: p.data_ptr() for k, p in params.items()}
        assert all(p.device.type == "cuda" for p in params.values())
        for p in land.points():
            land.evaluate(p)
        # the live model's storage is reused for every point: mixed in place, never rebuilt
        assert {k: p.data_ptr() for k, p in land.model.named_parameters()} == ptrs
    finally:
        land.close()
    torch.cuda.synchronize()


def test_plane_anchor_values_match_on_gpu(root):
    spec = _spec({"type": "plane", "a": "ft_a", "b": "ft_b", "c": "ft_c", "resolution": [3, 3]},
                 device="cuda", dtype="float32")
    land = Landscape.open(spec, FileResolver(root))
    try:
        for anchor in land.anchors:
            own = run(_spec({"type": "linear", "a": anchor.name, "b": anchor.name, "points": 2},
                            device="cuda", dtype="float32"), FileResolver(root), progress=False)
            got = land.evaluate(dict(anchor.coords))
            assert got["loss"] == pytest.approx(own["points"][0]["metrics"]["loss"], abs=1e-4)
    finally:
        land.close()
