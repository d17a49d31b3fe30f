"""Several points per forward pass (:mod:`basin.evaluate.multi`): vmapped records equal one-at-a-time ones.

The switch is meant for GPUs (``measure_many`` runs one point at a time on the CPU); these
tests force it on the CPU with ``allow_cpu`` to check the numbers, and that each batch then
costs one forward pass for ``k`` points.
"""

from __future__ import annotations

import pytest

from basin import FileResolver, Landscape
from tests.core import families, helpers
from tests.core.families import FAMILIES

TOL = 1e-5
COORDS = [{"alpha": a} for a in (0.0, 0.3, 1.0, -0.5, 1.5)]


@pytest.fixture(scope="module", params=["bert", "gpt2_cls"])
def fam(request, tmp_path_factory):
    return request.param, families.build_family(FAMILIES[request.param], tmp_path_factory.mktemp(request.param))


def open_land(name, dirs, **kw) -> Landscape:
    spec = {"path": {"type": "linear", "a": "A", "b": "B", "points": 3}, "dataset": dirs["data"].name,
            "task": FAMILIES[name].task, "dtype": "float32", "batch_size": 4, "per_example": True,
            **kw.pop("spec", {})}
    return Landscape.open(helpers.cpu_spec(spec), FileResolver(dirs["data"].parent), **kw)


def head_calls(land: Landscape) -> list[int]:
    calls = [0]
    head = land.model.classifier if hasattr(land.model, "classifier") else land.model.score
    head.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("scope", ["all", "upper"])
def test_vmapped_points_equal_one_at_a_time(fam, scope):
    name, dirs = fam
    with open_land(name, dirs, spec={"scope": scope}, points_per_pass=3) as land:
        calls = head_calls(land)
        many = land.measure_many(COORDS, allow_cpu=True)
        batches = len(land.evaluator.batches)
        assert calls[0] == 2 * batches  # two groups (3 + 2 points), one forward pass per batch each
        one = [land.measure(c) for c in COORDS]
    for c, got, want in zip(COORDS, many, one, strict=True):
        assert got.keys() == want.keys()
        assert got["metrics"] == pytest.approx(want["metrics"], abs=TOL), f"{name} {scope} {c}"
        for k, col in want["examples"].items():
            assert [float(x) for x in got["examples"][k]] == pytest.approx([float(y) for y in col], abs=TOL)


def test_the_cpu_path_is_one_point_at_a_time_unless_forced(fam):
    name, dirs = fam
    with open_land(name, dirs, points_per_pass=3) as land:
        calls = head_calls(land)
        many = land.measure_many(COORDS)
        assert calls[0] == len(COORDS) * len(land.evaluator.batches)
        assert [r["metrics"] for r in many] == [land.measure(c)["metrics"] for c in COORDS]
