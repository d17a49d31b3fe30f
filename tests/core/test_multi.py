"""Several points per forward pass (:mod:`basin.evaluate.multi`): vmapped records equal one-at-a-time ones.

Every task that can take it (classification, causal LM, seq2seq) on tiny real models, scopes
``all`` and ``upper`` (the second with frozen-prefix reuse on), and the drive loop: a run whose
points go ``k`` per pass gives the same document as one point at a time. ``auto`` picks one
point a pass on the CPU, so these tests ask for ``k`` explicitly.
"""

from __future__ import annotations

import pytest
import torch

from basin import FileResolver, Landscape
from basin.drive import ListSink, ListSource, WaveSource, drive
from basin.engine import Point, run
from basin.evaluate.multi import AUTO_MAX_K, PointStack, auto_points_per_pass
from tests.core import families, helpers
from tests.core.families import FAMILIES

TOL = 1e-5
COORDS = [{"alpha": a} for a in (0.0, 0.3, 1.0, -0.5, 1.5)]
#: One family per task and architecture kind: encoder and decoder classifiers, decoder LMs (tied
#: and Conv1D), an encoder-decoder.
NAMES = ["bert", "gpt2_cls", "llama_tied", "gpt2_lm", "t5"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = families.build_family(FAMILIES[name], tmp_path_factory.mktemp(name))
        return cache[name]

    return get


def spec_of(name, dirs, **kw) -> dict:
    return {
        "path": {"type": "linear", "a": "A", "b": "B", "points": 3},
        "dataset": dirs["data"].name,
        "task": FAMILIES[name].task,
        "dtype": "float32",
        "batch_size": 4,
        "per_example": True,
        **kw,
    }


def open_land(name, dirs, spec=None, **kw) -> Landscape:
    return Landscape.open(
        helpers.cpu_spec(spec_of(name, dirs, **(spec or {}))),
        FileResolver(dirs["data"].parent),
        **kw,
    )


def count_calls(module: torch.nn.Module) -> list[int]:
    calls = [0]
    module.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def last_module(land: Landscape) -> torch.nn.Module:
    """The module every forward pass runs last (the head / LM head)."""
    m = land.model
    for attr in ("classifier", "score", "lm_head"):
        if hasattr(m, attr):
            return getattr(m, attr)
    raise AssertionError(type(m).__name__)


def assert_same(many, one, where):
    for got, want in zip(many, one, strict=True):
        assert got.keys() == want.keys(), where
        assert got["metrics"] == pytest.approx(want["metrics"], abs=TOL, rel=TOL), where
        for k, col in want["examples"].items():
            assert [float(x) for x in got["examples"][k]] == pytest.approx(
                [float(y) for y in col], abs=TOL, rel=TOL
            ), f"{where} {k}"
        if "intervals" in want:
            for m, iv in want["intervals"].items():
                assert got["intervals"][m] == pytest.approx(iv, abs=TOL, rel=TOL), where


@pytest.mark.parametrize("name", NAMES)
def test_vmapped_points_equal_one_at_a_time_for_every_task(built, name):
    dirs = built(name)
    with open_land(name, dirs, points_per_pass=3, prefix=False) as land:
        assert land.points_per_pass == 3
        calls = count_calls(last_module(land))
        many = land.measure_many(COORDS)
        passes = calls[0]
        one = [land.measure(c) for c in COORDS]
        # two groups (3 + 2 points), one forward pass per batch each (one-token LM batches skip)
        assert passes == 2 * (calls[0] - passes) // len(COORDS)
    assert_same(many, one, name)


@pytest.mark.parametrize("name", ["bert", "llama_tied"])
def test_stacked_passes_replay_the_frozen_prefix(built, name):
    """Scope ``upper``: the first point records the frozen lower blocks, the stacked passes replay
    them (the lowest block never runs again) and the numbers are those of full passes."""
    dirs = built(name)
    with open_land(name, dirs, spec={"scope": "upper"}, points_per_pass=3) as land:
        assert land.prefix_summary()["on"], land.prefix_summary()
        cut = dict(land.model.named_modules())[land.prefix_summary()["cuts"][0]]
        lower = count_calls(next(cut.children()))  # runs only when the cut block really computes
        many = land.measure_many(COORDS)
        batches = len(land.evaluator.batches)
        assert lower[0] == batches  # the first point's capture only: 4 later points replayed it
        assert land.prefix_summary()["cached_batches"] == batches
    with open_land(name, dirs, spec={"scope": "upper"}, points_per_pass=1, prefix=False) as land:
        one = [land.measure(c) for c in COORDS]
    assert_same(many, one, f"{name} upper")


def test_ensemble_and_slerp_runs_take_it_too(built):
    dirs = built("bert")
    for extra in ({"ensemble": True}, {"path": {"type": "slerp", "a": "A", "b": "B", "points": 3}}):
        with open_land("bert", dirs, spec=extra, points_per_pass=4, prefix=False) as land:
            many = land.measure_many(
                COORDS[:4] if "path" not in extra else [{"alpha": a} for a in (0.2, 0.5, 0.9)]
            )
            one = [
                land.measure(r_c)
                for r_c in (
                    COORDS[:4] if "path" not in extra else [{"alpha": a} for a in (0.2, 0.5, 0.9)]
                )
            ]
        assert_same(many, one, str(extra))
        if "ensemble" in extra:
            assert [r["ensemble"] for r in many] == [r["ensemble"] for r in one]


def test_auto_is_one_point_a_pass_on_the_cpu_and_the_switch_is_checked(built, monkeypatch):
    dirs = built("bert")
    monkeypatch.delenv("BASIN_POINTS_PER_PASS", raising=False)
    with open_land("bert", dirs) as land:
        assert land.points_per_pass == 1
        assert "CPU" in land.width_summary()["why"]
        calls = count_calls(last_module(land))
        land.measure_many(COORDS)
        assert calls[0] == len(COORDS) * len(land.evaluator.batches)
    monkeypatch.setenv("BASIN_POINTS_PER_PASS", "4")
    with open_land("bert", dirs) as land:
        assert land.points_per_pass == 4
    monkeypatch.setenv("BASIN_POINTS_PER_PASS", "many")
    with pytest.raises(ValueError, match="BASIN_POINTS_PER_PASS"):
        open_land("bert", dirs)


def test_auto_width_on_cuda_follows_the_size_and_free_memory():
    cuda = torch.device("cuda")
    assert auto_points_per_pass(torch.device("cpu"), 10_000_000, 4) == 1
    # 135 M fp32 movable parameters = 540 MB a point: a quarter of 80 GB holds the cap
    assert auto_points_per_pass(cuda, 135_000_000, 4, free_bytes=80 * 10**9) == AUTO_MAX_K
    # ... a quarter of 4 GB holds one extra copy: 1
    assert auto_points_per_pass(cuda, 135_000_000, 4, free_bytes=4 * 10**9) == 1
    assert auto_points_per_pass(cuda, 135_000_000, 2, free_bytes=6 * 10**9) == 5
    assert (
        auto_points_per_pass(cuda, 8_000_000_000, 2, free_bytes=140 * 10**9) == 1
    )  # past the size cap


@pytest.mark.parametrize(
    "name,extra",
    [
        ("bert", {"path": {"type": "linear", "a": "A", "b": "B", "points": 7}}),
        (
            "llama_tied",
            {"path": {"type": "linear", "a": "A", "b": "B", "points": 6}, "scope": "upper"},
        ),
        (
            "bert",
            {"path": {"type": "linear", "a": "A", "b": "B", "points": 9}, "refine": {"budget": 7}},
        ),
    ],
)
def test_a_run_driven_k_points_a_pass_gives_the_same_document(built, monkeypatch, name, extra):
    dirs = built(name)
    spec = helpers.cpu_spec(spec_of(name, dirs, per_example=False, **extra))
    docs = []
    for k in ("1", "3"):
        monkeypatch.setenv("BASIN_POINTS_PER_PASS", k)
        docs.append(run(spec, FileResolver(dirs["data"].parent), progress=False))
    one, many = docs
    assert many["timings"]["points_per_pass"]["points_per_pass"] == 3
    assert one["timings"]["points_per_pass"]["points_per_pass"] == 1
    assert [p["index"] for p in many["points"]] == [p["index"] for p in one["points"]]  # same order
    for a, b in zip(many["points"], one["points"], strict=True):
        assert a["coords"] == b["coords"]
        assert a["metrics"] == pytest.approx(b["metrics"], abs=TOL, rel=TOL)
    sa, sb = many["summary"]["barrier"], one["summary"]["barrier"]
    assert sa.keys() == sb.keys()
    for m in sb:
        assert sa[m]["value"] == pytest.approx(sb[m]["value"], abs=TOL, rel=TOL), m
        assert sa[m]["alpha"] == sb[m]["alpha"] and sa[m].get("verdict") == sb[m].get("verdict"), m


def test_a_cancel_inside_a_group_gives_every_point_of_it_back(built):
    dirs = built("bert")
    with open_land("bert", dirs, points_per_pass=3, prefix=False) as land:
        asked = [0]

        def stop() -> bool:  # asked before the group and between its batches: stop inside the group
            asked[0] += 1
            return asked[0] == 3

        released = []
        src = ListSource(land.points())
        src.release = released.append  # type: ignore[method-assign]
        sink = ListSink()
        stats = drive(land, src, sink, should_stop=stop)
        assert stats.stopped == "cancelled" and sink.results == []
        assert [p.index for p in released] == [p.index for p in land.points()[:3]][::-1]
        assert stats.interrupted == land.points()[0].index
        waves = iter([[0, 1, 2, 3], [4]])
        wave = WaveSource(lambda i: Point(i, {"alpha": i / 4}), lambda: next(waves, []))
        assert [p.index for p in wave.take(3)] == [0, 1, 2] and [p.index for p in wave.take(3)] == [
            3
        ]
        assert [p.index for p in wave.take(3)] == [4] and wave.take(3) == []  # never across a wave


def test_the_stack_mixes_in_fp32_whatever_dtype_the_basis_is_held_in():
    """Endpoints held in bf16 (or on the host) are mixed per tensor in fp32, then cast once to the
    live dtype; per-tensor (SLERP) coefficients give each tensor its own rate."""
    g = torch.Generator().manual_seed(0)
    o = [torch.randn(3, 4, generator=g).bfloat16(), torch.randn(3, generator=g).bfloat16()]
    d = [[torch.randn(3, 4, generator=g).bfloat16(), torch.randn(3, generator=g).bfloat16()]]
    model = torch.nn.Linear(4, 3)
    stack = PointStack(
        model, ["weight", "bias"], o, d, [[0.3], [[1.7, -0.5]]], [torch.float32, torch.bfloat16]
    )
    w, b = stack.params["weight"], stack.params["bias"]
    assert w.shape == (2, 3, 4) and w.dtype == torch.float32 and b.dtype == torch.bfloat16
    assert torch.allclose(w[0], o[0].float() + 0.3 * d[0][0].float(), rtol=1e-6, atol=1e-7)
    assert torch.allclose(w[1], o[0].float() + 1.7 * d[0][0].float(), rtol=1e-6, atol=1e-7)
    assert torch.allclose(
        b[1].float(), o[1].float() - 0.5 * d[0][1].float(), rtol=1e-2, atol=1e-2
    )  # bf16 cast
