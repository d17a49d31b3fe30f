"""How the basis is held (basin.holding): bf16 / fp16 against fp32 masters, and on the host.

Every path type that holds directions is opened twice on the tiny classifiers, once with fp32
masters (``dtype: float32``) and once held in bf16 (or fp16): each held tensor is its fp32
master rounded once (≤ u relative per element), and every mixed point is within the bound
the docs state, u·(|θ₀| + Σₖ|cₖ|·|dₖ|), of the fp32 masters' point. ``BASIN_HOLD=host``
streams the basis tensor by tensor (on a CPU-only machine the same memory, the per-tensor
path): its points equal the resident ones exactly.
"""

from __future__ import annotations

import copy

import pytest
import torch

from basin import FileResolver, Landscape
from basin.errors import InvalidSpec
from basin.holding import UNIT_ROUNDOFF
from basin.space import ParamSpace
from tests.core import helpers

FP32_SLOP = 8 * 2.0**-24  # the fp32 sums of a mix (a few roundings of ≤ 2⁻²⁴ each)

#: every path type that holds directions, with two points each (off the anchors: extrapolating too)
PATHS = {
    "linear": (
        {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 3},
        [{"alpha": 0.3}, {"alpha": 1.7}],
    ),
    "bezier": (
        {"type": "bezier", "a": "ft_a", "b": "ft_b", "control": "ft_c", "points": 3},
        [{"alpha": 0.3}, {"alpha": 0.8}],
    ),
    "polychain": (
        {"type": "polychain", "a": "ft_a", "b": "ft_b", "control": "ft_c", "points": 3},
        [{"alpha": 0.2}, {"alpha": 0.9}],
    ),
    "plane": (
        {"type": "plane", "a": "ft_a", "b": "ft_b", "c": "ft_c", "resolution": [2, 2]},
        [{"x": 0.4, "y": -0.3}, {"x": 1.3, "y": 0.8}],
    ),
    "random_plane": (
        {"type": "random_plane", "center": "ft_a", "seed": 5, "resolution": [2, 2]},
        [{"x": 0.5, "y": -0.7}, {"x": -1.0, "y": 1.0}],
    ),
    "task_plane": (
        {"type": "task_plane", "origin": "init", "a": "ft_a", "b": "ft_b", "resolution": [2, 2]},
        [{"x": 0.5, "y": 0.25}, {"x": 1.5, "y": -0.5}],
    ),
    "slerp": (
        {"type": "slerp", "a": "ft_a", "b": "ft_b", "points": 3},
        [{"alpha": 0.3}, {"alpha": 0.8}],
    ),
    "task_arithmetic": (
        {"type": "task_arithmetic", "base": "init", "models": ["ft_a", "ft_b"], "points": 3},
        [{"alpha": 0.6}],
    ),
}


def _open(fam, path, **kw) -> Landscape:
    spec = helpers.cpu_spec({"path": path, "dataset": "eval.csv", "max_examples": 8, **kw})
    return Landscape.open(spec, FileResolver(fam["data"].parent))


def _bound(land32: Landscape, coeffs, i: int) -> torch.Tensor:
    """|θ₀| + Σₖ|cₖ|·|dₖ| of tensor ``i`` from the fp32 masters."""
    s = land32.space
    out = s.origin[i].abs().clone()
    for c, d in zip(coeffs, s.directions, strict=True):
        ci = c[i] if isinstance(c, (list, tuple)) else c
        out.add_(d[i].abs(), alpha=abs(float(ci)))
    return out


@pytest.mark.parametrize("kind", list(PATHS))
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_held_basis_is_within_its_rounding_of_fp32_masters(classifier_family, kind, dtype):
    path, coords = PATHS[kind]
    low = getattr(torch, dtype)
    u = UNIT_ROUNDOFF[low]
    tiny = 2.0**-25 if low == torch.float16 else 0.0  # fp16 below its normal range: absolute
    l32 = _open(classifier_family, path, dtype="float32")
    lh = _open(classifier_family, path, dtype=dtype)
    try:
        assert lh.held == low and l32.held == torch.float32
        # no fp32 master copy: every held tensor is in the low dtype
        held = [*lh.space.origin, *(x for d in lh.space.directions for x in d)]
        assert held and all(x.dtype == low for x in held)
        # each held tensor is its fp32 master rounded once
        masters = [*l32.space.origin, *(x for d in l32.space.directions for x in d)]
        for h, m in zip(held, masters, strict=True):
            assert ((h.float() - m).abs() <= u * m.abs() + tiny).all()
        # the mix before its cast into the live model (an fp32 copy of the model holds it)
        fp32_model = copy.deepcopy(lh.model).float()
        mixed = ParamSpace(fp32_model, lh.names)
        mixed.set_basis(lh.space.origin, lh.space.directions)
        rounded_somewhere = False
        for point in coords:
            coeffs = l32.path.coeffs(point)
            l32.space.mix_(coeffs)
            mixed.mix_(lh.path.coeffs(point))
            for i, name in enumerate(l32.names):
                want, got = l32.space.live[i], mixed.live[i]
                b = _bound(l32, coeffs, i)
                err = (got - want).abs()
                assert (err <= (u + FP32_SLOP) * b + tiny * 4).all(), (
                    f"{kind} {dtype} {name}: max error {float(err.max()):.3g} over the bound"
                )
                rounded_somewhere |= bool((err > 0).any())
            # and the live model gets that mix cast once to its dtype
            lh.evaluate(point)
            for i, name in enumerate(lh.names):
                assert torch.equal(lh.space.live[i], mixed.live[i].to(low)), (
                    f"{kind}: {name} is not the mix cast once"
                )
        assert rounded_somewhere  # the held basis is really in low precision
    finally:
        l32.close()
        lh.close()


@pytest.mark.parametrize("kind", ["linear", "plane", "random_plane", "task_arithmetic"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_host_streamed_basis_mixes_exactly_as_the_resident_one(
    classifier_family, monkeypatch, kind, dtype
):
    path, coords = PATHS[kind]
    monkeypatch.setenv("BASIN_HOLD", "device")
    resident = _open(classifier_family, path, dtype=dtype)
    monkeypatch.setenv("BASIN_HOLD", "host")
    streamed = _open(classifier_family, path, dtype=dtype)
    try:
        assert resident.space._direct == (
            dtype == "float32"
        )  # fp32 on the device: foreach, as before
        assert not streamed.space._direct  # the per-tensor path a GPU streams through
        for a, b in zip(
            [*resident.space.origin, *(x for d in resident.space.directions for x in d)],
            [*streamed.space.origin, *(x for d in streamed.space.directions for x in d)],
            strict=True,
        ):
            assert torch.equal(a, b)
        for point in coords:
            m1, m2 = resident.evaluate(point), streamed.evaluate(point)
            for x, y in zip(resident.space.live, streamed.space.live, strict=True):
                assert torch.equal(x, y)
            assert m1 == m2
        assert resident.point_key(coords[0]) == streamed.point_key(
            coords[0]
        )  # where it is held is not a result
    finally:
        resident.close()
        streamed.close()


def test_held_dtype_is_part_of_the_point_key_and_fp32_keys_are_unchanged(classifier_family):
    path, coords = PATHS["linear"]
    l32, l16 = (
        _open(classifier_family, path, dtype="float32"),
        _open(classifier_family, path, dtype="bfloat16"),
    )
    try:
        assert "held" not in l32._key_base and l16._key_base["held"] == "bfloat16"
    finally:
        l32.close()
        l16.close()


def test_fp16_refuses_a_basis_it_cannot_hold(tmp_path):
    big = torch.full((3,), 1e6)
    from basin.holding import keep

    with pytest.raises(InvalidSpec, match="float16 cannot hold tensor w"):
        keep(big, torch.float16, torch.device("cpu"), name="w")
    assert keep(big, torch.bfloat16, torch.device("cpu")).isfinite().all()


def test_bad_hold_setting_is_refused(classifier_family, monkeypatch):
    monkeypatch.setenv("BASIN_HOLD", "gpu")
    with pytest.raises(InvalidSpec, match="BASIN_HOLD"):
        _open(classifier_family, PATHS["linear"][0])


@pytest.mark.parametrize("kind", ["linear", "plane"])
def test_large_tensors_built_and_mixed_a_span_at_a_time_give_the_same_points(
    classifier_family, monkeypatch, kind
):
    """Tensors over ``SPAN`` elements are read, built, mixed and compared a flat span at a time
    (no fp32 copy of a whole embedding beside the held basis): the same basis and points."""
    import basin.holding

    path, coords = PATHS[kind]
    whole = _open(classifier_family, path, dtype="bfloat16")
    monkeypatch.setattr(basin.holding, "SPAN", 999)  # every tensor of the tiny model is cut
    monkeypatch.setenv("BASIN_HOLD", "host")  # the streamed mix too
    cut = _open(classifier_family, path, dtype="bfloat16")
    try:
        assert cut.space._buf is not None and cut.space._buf.numel() == 999
        u = UNIT_ROUNDOFF[torch.bfloat16]
        for a, b in zip(
            [*whole.space.origin, *(x for d in whole.space.directions for x in d)],
            [*cut.space.origin, *(x for d in cut.space.directions for x in d)],
            strict=True,
        ):
            if kind == "linear":  # differences only: the same numbers
                assert torch.equal(a, b)
            else:  # the plane's norms sum per span: equal up to fp32 rounding, then one bf16 step at most
                assert ((a.float() - b.float()).abs() <= 2 * u * a.float().abs() + 1e-12).all()
        for point in coords:
            m1, m2 = whole.evaluate(point), cut.evaluate(point)
            if kind == "linear":
                assert m1 == m2
                for x, y in zip(whole.space.live, cut.space.live, strict=True):
                    assert torch.equal(x, y)
            else:
                assert m2["loss"] == pytest.approx(m1["loss"], rel=1e-2)
        if kind == "linear":
            assert (
                cut.distance is not None and whole.distance is not None
            )  # read a span at a time too
            for key in ("l2", "cosine"):
                assert cut.distance[key] == pytest.approx(whole.distance[key], rel=1e-12)
            assert [r["l2"] for r in cut.distance["per_tensor"]] == pytest.approx(
                [r["l2"] for r in whole.distance["per_tensor"]], rel=1e-12
            )
    finally:
        whole.close()
        cut.close()


def test_a_lazy_span_reads_just_those_elements(classifier_family):
    from basin.checkpoints import LazyStateDict

    lazy = LazyStateDict(classifier_family["ft_a"])
    name = next(k for k in lazy if lazy.meta(k)[1].is_floating_point and len(lazy.meta(k)[0]) == 2)
    full = lazy[name].reshape(-1)
    assert torch.equal(lazy.span(name, 7, 700), full[7:700])
    assert torch.equal(lazy.span(name, 0, full.numel()), full)
