"""Frozen-prefix reuse (:mod:`basin.evaluate.prefix`): the same numbers as the full pass, less work.

For tiny real BERT, GPT-2 (LM and classifier), Llama, GPT-NeoX, T5 and BART, scopes that keep
the embeddings and lower blocks at θA are evaluated with reuse on and off at several points
(the first records the prefix, the later ones replay it): metrics and per-example values agree
to 1e-5 and the frozen lower blocks do not run again. The memory cap sends batches that do
not fit to the full pass (same numbers, said in the summary); reuse can be switched off.
"""

from __future__ import annotations

import pytest
import torch

from basin import FileResolver, Landscape
from basin.engine import run
from basin.spec import parse_spec
from tests.core import families, helpers
from tests.core.families import FAMILIES
from tests.factories import build_sentiment_pair

TOL = 1e-5
ALPHAS = (0.3, 1.0, -0.5, 0.3)

#: (family, scope) → the modules whose recorded output is replayed
CASES = {
    ("bert", "upper"): ["bert.encoder.layer.1"],
    ("bert", "head"): ["bert.encoder"],  # pooler + classifier move
    ("gpt2_lm", "upper"): ["transformer.h.1"],
    ("gpt2_lm", "rest"): ["transformer.h.2"],  # ln_f moves: up to the last block
    ("gpt2_cls", "head"): ["transformer"],  # score moves: the whole base model is replayed
    ("llama_untied", "upper"): ["model.layers.1"],
    ("llama_untied", "head"): ["model"],
    ("gpt_neox", "upper"): ["gpt_neox.layers.1"],
    ("t5", "upper"): ["encoder.block.1"],  # encoder and decoder upper thirds move
    ("t5", "decoder.upper"): ["encoder", "decoder.block.0"],  # frozen encoder, then decoder block 0
    ("t5", "decoder"): ["encoder"],
    ("bart", "head"): ["model"],  # final_logits_bias only
    ("bart", "decoder.upper"): ["model.encoder", "model.decoder.layers.1"],
}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache: dict[str, dict] = {}

    def get(name: str) -> dict:
        if name not in cache:
            cache[name] = families.build_family(FAMILIES[name], tmp_path_factory.mktemp(name))
        return cache[name]
    return get


def open_land(name: str, dirs: dict, scope: str, **kw) -> Landscape:
    f = FAMILIES[name]
    spec = {"path": {"type": "linear", "a": "A", "b": "B", "points": 3}, "dataset": dirs["data"].name,
            "task": f.task, "dtype": "float32", "scope": scope, "batch_size": 4, "per_example": True}
    return Landscape.open(helpers.cpu_spec(spec), FileResolver(dirs["data"].parent), **kw)


def first_block_calls(land: Landscape) -> list[int]:
    """A counter of calls into the first block of the model's first stack (its first child module)."""
    from basin.groups import stack_modules

    block0 = next(iter(stack_modules(land.model).values()))[0]
    child = next(block0.children())
    calls = [0]
    child.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def assert_same(got: dict, want: dict, what: str) -> None:
    for m, v in want["metrics"].items():
        assert got["metrics"][m] == pytest.approx(v, abs=TOL), f"{what}: {m}"
    for k, col in want["examples"].items():
        for i, (x, y) in enumerate(zip(got["examples"][k], col, strict=True)):
            assert float(x) == pytest.approx(float(y), abs=TOL), f"{what}: example {i} {k}"


@pytest.mark.parametrize(("name", "scope"), list(CASES), ids=[f"{n}-{s}" for n, s in CASES])
def test_reuse_equals_the_full_pass_and_skips_the_frozen_blocks(built, name, scope):
    dirs = built(name)
    full = open_land(name, dirs, scope, prefix=False)
    fast = open_land(name, dirs, scope)  # on by default
    calls = first_block_calls(fast)
    try:
        for n, a in enumerate(ALPHAS):
            before = calls[0]
            assert_same(fast.measure({"alpha": a}), full.measure({"alpha": a}), f"{name} {scope} α={a}")
            if n > 0:  # recorded at the first point; replayed since
                assert calls[0] == before, f"{name} {scope}: the frozen first block ran again at α={a}"
        info = fast.prefix_summary()
        assert info["on"] and info["cuts"] == CASES[(name, scope)]
        assert info["cached_batches"] == info["batches"] > 1 and info["full_batches"] == 0
        assert full.prefix_summary() == {"on": False, "reason": "switched off (BASIN_PREFIX_REUSE=0 or prefix=False)"}
    finally:
        full.close()
        fast.close()


@pytest.mark.parametrize(("name", "scope", "why"), [
    ("bert", "all", "an embedding tensor moves"),
    ("gpt2_lm", "lower", "the first block of 'transformer.h' moves"),
    ("t5", "encoder.lower", "the first block of 'encoder.block' moves"),
])
def test_scopes_without_a_frozen_prefix_run_the_full_pass_and_say_why(built, name, scope, why):
    land = open_land(name, built(name), scope)
    try:
        land.evaluate({"alpha": 0.5})
        info = land.prefix_summary()
        assert not info["on"] and why in info["reason"]
    finally:
        land.close()


@pytest.mark.parametrize("name", ["bert", "llama_untied"])
def test_over_the_memory_cap_batches_fall_back_to_the_full_pass(built, name):
    dirs = built(name)
    full = open_land(name, dirs, "upper", prefix=False)
    unbounded = open_land(name, dirs, "upper")
    unbounded.evaluate({"alpha": 0.5})
    total = unbounded.prefix_summary()
    unbounded.close()
    none = open_land(name, dirs, "upper", prefix_cap_mb=0)
    half = open_land(name, dirs, "upper", prefix_cap_mb=total["cache_mb"] / 2)
    try:
        for a in ALPHAS:
            want = full.measure({"alpha": a})
            assert_same(none.measure({"alpha": a}), want, f"{name} cap 0 α={a}")
            assert_same(half.measure({"alpha": a}), want, f"{name} half cap α={a}")
        info = none.prefix_summary()
        assert info["cached_batches"] == 0 and info["full_batches"] == info["batches"]
        assert "did not fit the cap" in info["reason"] and "BASIN_PREFIX_CACHE_MB" in info["reason"]
        info = half.prefix_summary()
        assert 0 < info["cached_batches"] < info["batches"]
        assert info["cached_batches"] + info["full_batches"] == info["batches"]
        assert info["cache_mb"] <= total["cache_mb"] / 2
    finally:
        for land in (full, none, half):
            land.close()


def test_run_document_reports_reuse_and_the_switches_turn_it_off(built, monkeypatch):
    dirs = built("bert")
    spec = helpers.cpu_spec({"path": {"type": "linear", "a": "A", "b": "B", "points": 4},
                             "dataset": dirs["data"].name, "task": "classification", "dtype": "float32",
                             "scope": "upper", "batch_size": 4})
    on = run(spec, FileResolver(dirs["data"].parent), progress=False)
    assert on["timings"]["prefix_reuse"]["on"] and on["timings"]["prefix_reuse"]["cuts"] == ["bert.encoder.layer.1"]
    monkeypatch.setenv("BASIN_PREFIX_REUSE", "0")
    off = run(spec, FileResolver(dirs["data"].parent), progress=False)
    assert off["timings"]["prefix_reuse"]["on"] is False
    for p, q in zip(on["points"], off["points"], strict=True):
        assert p["metrics"] == pytest.approx(q["metrics"], abs=TOL)
    monkeypatch.setenv("BASIN_PREFIX_REUSE", "1")
    monkeypatch.setenv("BASIN_PREFIX_CACHE_MB", "0")
    capped = run(spec, FileResolver(dirs["data"].parent), progress=False)
    assert capped["timings"]["prefix_reuse"]["cached_batches"] == 0
    for p, q in zip(capped["points"], off["points"], strict=True):
        assert p["metrics"] == pytest.approx(q["metrics"], abs=TOL)


def test_generation_beside_a_causal_lm_run_is_untouched_by_reuse(tmp_path):
    """A causal_lm run with prompts samples with generate() on the same live model: the replaying
    modules must run normally there. Samples and losses equal the run with reuse off."""
    pair = build_sentiment_pair(tmp_path, kind="llama", steps=4)
    spec = parse_spec({"path": {"type": "linear", "a": str(pair["neg"]), "b": str(pair["pos"]), "points": 3},
                       "dataset": str(pair["text"]), "task": "causal_lm", "batch_size": 4, "device": "cpu",
                       "scope": "upper", "generation": {"prompts": str(pair["prompts"]), "samples_per_prompt": 2,
                                                        "max_new_tokens": 5, "keep_samples": 12}})
    with Landscape.open(spec, FileResolver()) as on, Landscape.open(spec, FileResolver(), prefix=False) as off:
        for p in on.points():
            got, want = on.measure(p.coords), off.measure(p.coords)
            assert got["samples"] == want["samples"]
            assert got["metrics"] == pytest.approx(want["metrics"], abs=TOL)
        info = on.prefix_summary()
        assert info["on"] and info["cached_batches"] == info["batches"]


def test_the_first_batch_self_check_turns_reuse_off_when_replay_differs(built, monkeypatch):
    """If replaying a cut gave other numbers than the full pass (a family whose blocks pass state
    the record does not hold), reuse switches itself off on the first batch and says so."""
    from basin.evaluate import prefix as prefix_mod

    dirs = built("bert")
    real = prefix_mod.PrefixReuse._replayed

    def corrupted(self, j):
        return prefix_mod._map(real(self, j), lambda t: t.flip(-1), {})  # features permuted

    monkeypatch.setattr(prefix_mod.PrefixReuse, "_replayed", corrupted)
    full = open_land("bert", dirs, "upper", prefix=False)
    land = open_land("bert", dirs, "upper")
    try:
        for a in ALPHAS:
            assert_same(land.measure({"alpha": a}), full.measure({"alpha": a}), f"α={a}")
        info = land.prefix_summary()
        assert not info["on"] and "differs from the full pass" in info["reason"]
    finally:
        land.close()
        full.close()


def test_a_moved_module_that_runs_before_the_cut_switches_reuse_off():
    """A model whose input projection (neither embeddings nor a block: group ``rest``) runs
    before the stack: moving it with an upper block would make the recorded prefix depend on
    the point, so the first batch's ordering check switches reuse off and the numbers stay right."""
    from torch import nn

    from basin.evaluate.prefix import PrefixReuse
    from basin.groups import model_groups

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.blocks = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))

        def forward(self, x):
            h = self.proj(x)
            for b in self.blocks:
                h = torch.tanh(b(h))
            return h

    torch.manual_seed(0)
    model = Tiny().eval()
    moved = ["proj.weight", "blocks.2.weight"]
    reuse, why = PrefixReuse.plan(model, moved, model_groups(model), num_batches=1, cap_bytes=2**20)
    assert reuse is not None and why is None and [c.path for c in reuse.cuts] == ["blocks.1"]
    x = torch.randn(2, 4)
    with torch.inference_mode():
        for scale in (1.0, 2.0):  # the second "point" changes the moved projection
            model.proj.weight.mul_(scale)
            want = model.blocks[2](model.blocks[1](model.blocks[0](model.proj(x)).tanh()).tanh()).tanh()
            with reuse.active():
                reuse.at(0)
                got = model(x)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert not reuse.info()["on"] and "proj holds a moved tensor and runs before a cut" in reuse.info()["reason"]
    reuse.close()
    assert "forward" not in model.blocks[1].__dict__  # the modules are restored
