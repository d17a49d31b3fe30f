"""The basis held in bf16 and streamed from pinned host memory, on a GPU (basin.holding).

Skipped without CUDA (CI has none); run on a GPU machine with ``pytest tests/gpu -q``.
"""

from __future__ import annotations

import pytest
import torch

from basin import FileResolver, Landscape
from basin.spec import parse_spec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]

PLANE = {"type": "plane", "a": "ft_a", "b": "ft_b", "c": "ft_c", "resolution": [3, 3]}


def _open(root, **kw) -> Landscape:
    spec = parse_spec({"path": PLANE, "dataset": "eval.csv", "device": "cuda", **kw})
    return Landscape.open(spec, FileResolver(root))


def _peak(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    return out, torch.cuda.max_memory_allocated() - before


def test_streamed_from_pinned_host_memory_equals_the_resident_basis(classifier_family, monkeypatch):
    root = classifier_family["data"].parent
    monkeypatch.setenv("BASIN_HOLD", "device")
    resident, on_device = _peak(lambda: _open(root, dtype="bfloat16"))
    monkeypatch.setenv("BASIN_HOLD", "host")
    streamed, off_device = _peak(lambda: _open(root, dtype="bfloat16"))
    try:
        assert all(t.device.type == "cpu" and t.is_pinned() for t in streamed.space.origin)
        assert all(
            t.device.type == "cuda" and t.dtype == torch.bfloat16 for t in resident.space.origin
        )
        assert off_device < on_device  # the basis never sat on the GPU
        for i in (0, 4, 8):
            assert streamed.evaluate(streamed.point(i)) == resident.evaluate(resident.point(i))
            for x, y in zip(streamed.space.live, resident.space.live, strict=True):
                assert torch.equal(x, y)
    finally:
        resident.close()
        streamed.close()


def test_bf16_held_on_cuda_is_within_its_rounding_of_fp32_masters(classifier_family):
    root = classifier_family["data"].parent
    l32, l16 = _open(root, dtype="float32"), _open(root, dtype="bfloat16")
    try:
        u = 2.0**-8
        point = {"x": 0.7, "y": 0.4}
        l32.evaluate(point)
        l16.evaluate(point)
        for i, name in enumerate(l32.names):
            bound = (
                l32.space.origin[i].abs()
                + 0.7 * l32.space.directions[0][i].abs()
                + 0.4 * l32.space.directions[1][i].abs()
            )
            err = (l16.space.live[i].float() - l32.space.live[i]).abs()
            assert (
                err <= u * l32.space.live[i].abs() + (u + u * u + 2.0**-20) * bound + 1e-30
            ).all(), name
    finally:
        l32.close()
        l16.close()
