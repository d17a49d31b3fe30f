"""Merge methods as paths (SLERP, task arithmetic, TIES, DARE) through the real engine.

Each is checked tensor by tensor against mergekit 0.1.5's own merge functions
(``mergekit.merge_methods.merge_state_dicts``, the library's in-memory API) on the same
tiny BERT checkpoints, and against a hand computation that needs no mergekit. The live
model's tensors after ``Landscape.evaluate`` are what is compared, so the whole path
(spec → build → per-point mix) is under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from basin import FileResolver, Landscape, run
from basin.errors import InvalidSpec
from basin.paths._merge import drop_seed
from basin.paths.slerp import DOT_THRESHOLD
from tests.core import helpers

TOL = 1e-5


@pytest.fixture(scope="module")
def fam(classifier_family):
    return classifier_family


def root_of(fam):
    return fam["data"].parent


def open_land(fam, path, **kw):
    spec = helpers.cpu_spec({"path": path, "dataset": "eval.csv", **kw})
    return Landscape.open(spec, FileResolver(root_of(fam)))


def live_at(land, coord: float) -> dict[str, torch.Tensor]:
    """The live model's movable tensors at λ/t = ``coord`` (after a real evaluation)."""
    land.evaluate({"alpha": coord})
    return {k: v.detach().clone() for k, v in land.space.current().items()}


def floats(sd):
    return {k: v.float() for k, v in sd.items() if v.is_floating_point()}


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], tol: float = TOL):
    assert got, "no tensors compared"
    for name, t in got.items():
        w = want[name].to(t.dtype)
        err = (t - w).abs().max().item()
        scale = max(1.0, w.abs().max().item())
        assert err <= tol * scale, f"{name}: max |diff| {err:.3g}"


def hand_slerp(t, a, b):
    """Shoemake's formula on whole tensors with mergekit's fallback, in float64."""
    x, y = a.double().reshape(-1), b.double().reshape(-1)
    na, nb = x.norm().item(), y.norm().item()
    dot = float((x / (na if na > 1e-8 else 1)) @ (y / (nb if nb > 1e-8 else 1)))
    dot = max(-1.0, min(1.0, dot))
    if abs(dot) > DOT_THRESHOLD:
        return ((1 - t) * a.double() + t * b.double()).float()
    om = math.acos(dot)
    return (math.sin((1 - t) * om) / math.sin(om) * a.double() + math.sin(t * om) / math.sin(om) * b.double()).float()


# ---- SLERP ------------------------------------------------------------------------------


def test_slerp_equals_mergekit_and_shoemake_per_tensor(fam):
    a, b = floats(helpers.state(fam["ft_a"])), floats(helpers.state(fam["ft_b"]))
    land = open_land(fam, {"type": "slerp", "a": "ft_a", "b": "ft_b", "points": 5})
    curved = [w for w in land.path.angles if w is not None]
    assert curved and len(curved) < len(land.path.angles), "the fixture should have curved and colinear tensors"
    for t in (0.3, 0.75):
        got = live_at(land, t)
        assert_same(got, {k: hand_slerp(t, a[k], b[k]) for k in got})
        mk = pytest.importorskip("mergekit.merge_methods")
        ref = mk.merge_state_dicts({"a": a, "b": b}, "slerp", parameters={"t": t}, base="a")
        assert_same(got, ref)
    # the ends are the checkpoints themselves, exactly as the linear path has them
    assert_same(live_at(land, 0.0), a, tol=0.0)
    assert_same(live_at(land, 1.0), b, tol=1e-6)
    land.close()


def test_slerp_differs_from_linear_between_the_ends_and_keeps_norms_closer(fam):
    a, b = floats(helpers.state(fam["ft_a"])), floats(helpers.state(fam["ft_b"]))
    land = open_land(fam, {"type": "slerp", "a": "ft_a", "b": "ft_b", "points": 3})
    got = live_at(land, 0.5)
    name = max((n for n, w in zip(land.names, land.path.angles, strict=True) if w is not None),
               key=lambda n: dict(zip(land.names, land.path.angles, strict=True))[n])
    lin = 0.5 * (a[name] + b[name])
    assert (got[name] - lin).abs().max() > 1e-4  # a curved tensor leaves the chord
    mean_norm = 0.5 * (a[name].norm() + b[name].norm())
    assert abs(got[name].norm() - mean_norm) < abs(lin.norm() - mean_norm)
    land.close()


def test_slerp_of_a_checkpoint_with_itself_is_refused():
    with pytest.raises(InvalidSpec, match="two different checkpoints"):
        helpers.cpu_spec({"path": {"type": "slerp", "a": "x", "b": "x"}, "dataset": "d.csv"})


# ---- task arithmetic ---------------------------------------------------------------------


def test_task_arithmetic_equals_mergekit_and_theta0_plus_lambda_sum(fam):
    o, a, b = (floats(helpers.state(fam[k])) for k in ("init", "ft_a", "ft_b"))
    land = open_land(fam, {"type": "task_arithmetic", "base": "init", "models": ["ft_a", "ft_b"],
                           "weights": [0.7, 0.4], "points": 5})
    for lam in (0.5, 1.25):
        got = live_at(land, lam)
        assert_same(got, {k: o[k] + lam * (0.7 * (a[k] - o[k]) + 0.4 * (b[k] - o[k])) for k in got})
        mk = pytest.importorskip("mergekit.merge_methods")
        ref = mk.merge_state_dicts({"init": o, "a": a, "b": b}, "task_arithmetic", base="init",
                                   parameters={"weight": {"a": 0.7, "b": 0.4}, "lambda": lam})
        assert_same(got, ref)
    land.close()


def test_task_arithmetic_with_one_model_is_the_linear_path(fam):
    """θ0 + λ(θA − θ0) is the linear path θ0 → θA: the same metrics at every λ."""
    spec = {"points": 3, "range": [0.0, 1.0]}
    ta = run(helpers.cpu_spec({"path": {"type": "task_arithmetic", "base": "init", "models": ["ft_a"], **spec},
                               "dataset": "eval.csv"}), FileResolver(root_of(fam)), progress=False)
    lin = run(helpers.cpu_spec({"path": {"type": "linear", "a": "init", "b": "ft_a", **spec},
                                "dataset": "eval.csv"}), FileResolver(root_of(fam)), progress=False)
    for p, q in zip(ta["points"], lin["points"], strict=True):
        assert p["metrics"]["loss"] == pytest.approx(q["metrics"]["loss"], abs=1e-6)
    assert [a["name"] for a in ta["anchors"]] == ["init", "ft_a"]  # λ = 1 is θA itself
    assert ta["summary"]["barrier"]["loss"]["value"] == pytest.approx(lin["summary"]["barrier"]["loss"]["value"],
                                                                      abs=1e-6)


# ---- TIES ---------------------------------------------------------------------------------


def hand_ties(o, models, weights, density, lam, normalize=True, consensus=True):
    """TIES per Yadav et al. with mergekit's weights: trim (top-k |τ|), elect sign of Σ wτ,
    disjoint (weighted) mean; written without mergekit or Basin code."""
    out = {}
    for k in o:
        taus = []
        for m, w in zip(models, weights, strict=True):
            tau = (m[k] - o[k]).reshape(-1)
            if density < 1:  # exactly k entries: equal magnitudes (a 2-class bias) are split by rank
                keep = max(1, int(density * tau.numel()))
                top = torch.argsort(tau.abs(), descending=True)[:keep]
                tau = torch.zeros_like(tau).index_copy(0, top, tau[top])
            taus.append(w * tau)
        stack = torch.stack(taus)
        ws = torch.tensor(weights).reshape(-1, 1).expand_as(stack)
        if consensus:
            elected = torch.where(stack.sum(0) >= 0, 1.0, -1.0)
            agree = stack.sign() == elected
        else:
            agree = torch.ones_like(stack, dtype=torch.bool)
        total = (stack * agree).sum(0)
        if normalize:
            div = (ws * agree).sum(0)
            total = total / torch.where(div == 0, torch.ones_like(div), div)
        out[k] = o[k] + lam * total.reshape(o[k].shape)
    return out


def test_ties_equals_mergekit_and_the_hand_computation(fam):
    o, a, b, c = (floats(helpers.state(fam[k])) for k in ("init", "ft_a", "ft_b", "ft_c"))
    land = open_land(fam, {"type": "ties", "base": "init", "models": ["ft_a", "ft_b", "ft_c"],
                           "density": 0.3, "weights": [1.0, 0.5, 0.8], "points": 3})
    got = live_at(land, 0.8)
    want = hand_ties(o, [a, b, c], [1.0, 0.5, 0.8], 0.3, 0.8)
    assert_same(got, {k: want[k] for k in got})
    mk = pytest.importorskip("mergekit.merge_methods")
    ref = mk.merge_state_dicts({"init": o, "a": a, "b": b, "c": c}, "ties", base="init",
                               parameters={"weight": {"a": 1.0, "b": 0.5, "c": 0.8}, "density": 0.3,
                                           "lambda": 0.8})
    assert_same(got, ref)
    # trimming really happened: a merged direction has zeros where every model was trimmed
    d = land.space.directions[0][land.names.index("classifier.weight")]
    assert 0 < (d == 0).sum().item() < d.numel()
    land.close()


def test_ties_default_density_is_the_papers_twenty_percent():
    spec = helpers.cpu_spec({"path": {"type": "ties", "base": "o", "models": ["a", "b"]}, "dataset": "d.csv"})
    assert spec.path.density == 0.2 and spec.path.normalize is True and spec.path.range == (0.0, 1.0)


# ---- DARE ---------------------------------------------------------------------------------


def mergekit_dare(mk, o, models, density, lam, seed, ties, rescale=True, weights=None):
    """mergekit's dare_linear / dare_ties with its global RNG seeded, per tensor and model, with
    the seed Basin draws that mask from — so the same masks, and mergekit's arithmetic after."""
    weights = weights or [1.0] * len(models)
    names = {f"m{k}": m for k, m in enumerate(models)}
    out = {}
    for name in o:
        tensors = {"init": o[name]}
        for k, (key, m) in enumerate(names.items()):
            # sparsify inside mergekit, one tensor and model at a time, on mergekit's global RNG
            from mergekit.sparsify import RescaleNorm, SparsificationMethod, sparsify
            torch.manual_seed(drop_seed(seed, k, name))
            tensors[key] = o[name] + sparsify(m[name] - o[name], density=density,
                                              method=SparsificationMethod.random,
                                              rescale_norm=RescaleNorm.l1 if rescale else None)
        merged = mk.merge_tensors(list(tensors.values()), "dare_ties" if ties else "dare_linear", base_index=0,
                                  parameters={"weight": list(weights), "density": 1.0, "lambda": lam})
        out[name] = merged
    return out


@pytest.mark.parametrize("ties", [False, True])
def test_dare_equals_mergekit_with_the_same_masks(fam, ties):
    o, a, b = (floats(helpers.state(fam[k])) for k in ("init", "ft_a", "ft_b"))
    mk = pytest.importorskip("mergekit.merge_methods")
    land = open_land(fam, {"type": "dare", "base": "init", "models": ["ft_a", "ft_b"], "density": 0.6,
                           "seed": 5, "rescale": "l1", "ties": ties, "points": 3})
    got = live_at(land, 0.9)
    ref = mergekit_dare(mk, o, [a, b], 0.6, 0.9, seed=5, ties=ties)
    assert_same(got, {k: ref[k] for k in got})
    land.close()


def test_dare_inverse_rescale_is_the_papers_one_over_one_minus_p(fam):
    o, a = (floats(helpers.state(fam[k])) for k in ("init", "ft_a"))
    land = open_land(fam, {"type": "dare", "base": "init", "models": ["ft_a"], "density": 0.25, "seed": 3,
                           "points": 3})
    got = live_at(land, 1.0)
    kept_share = []
    for k, t in got.items():
        tau = a[k] - o[k]
        g = torch.Generator().manual_seed(drop_seed(3, 0, k))
        mask = torch.bernoulli(torch.full(tuple(tau.shape), 0.25), generator=g)
        want = o[k] + tau * mask / 0.25
        assert (t - want).abs().max().item() <= TOL * max(1.0, want.abs().max().item()), k
        kept_share.append(mask.mean().item())
    assert 0.2 < sum(kept_share) / len(kept_share) < 0.3
    land.close()


def test_dare_is_reproducible_with_its_seed_and_changes_with_it(fam):
    path = {"type": "dare", "base": "init", "models": ["ft_a", "ft_b"], "density": 0.5, "points": 3}
    one = live_at(open_land(fam, {**path, "seed": 11}), 0.7)
    again = live_at(open_land(fam, {**path, "seed": 11}), 0.7)
    other = live_at(open_land(fam, {**path, "seed": 12}), 0.7)
    assert all(torch.equal(one[k], again[k]) for k in one)
    assert any(not torch.equal(one[k], other[k]) for k in one)
    # the same seed gives the same masks whatever the scope: masks are keyed by tensor name
    part = live_at(open_land(fam, {**path, "seed": 11}, scope="classifier"), 0.7)
    assert set(part) == {"classifier.weight", "classifier.bias"}
    assert all(torch.equal(part[k], one[k]) for k in part)


def test_point_keys_tell_merge_parameters_apart(fam):
    path = {"type": "dare", "base": "init", "models": ["ft_a", "ft_b"], "points": 3}
    keys = {open_land(fam, {**path, **extra}).point_key({"alpha": 0.5})
            for extra in ({}, {"seed": 1}, {"density": 0.9}, {"ties": True}, {"weights": [1.0, 2.0]})}
    assert len(keys) == 5


# ---- spec checks --------------------------------------------------------------------------


@pytest.mark.parametrize("path, message", [
    ({"type": "ties", "base": "o", "models": []}, "at least 1"),
    ({"type": "ties", "base": "o", "models": ["a", "a"]}, "twice"),
    ({"type": "task_arithmetic", "base": "o", "models": ["o", "a"]}, "also one of the models"),
    ({"type": "dare", "base": "o", "models": ["a", "b"], "weights": [1.0]}, "one per model"),
    ({"type": "dare", "base": "o", "models": ["a"], "density": 0}, "density"),
    ({"type": "ties", "base": "o", "models": ["a"], "density": 1.5}, "density"),
    ({"type": "dare", "base": "o", "models": ["a"], "rescale": "l2"}, "rescale"),
])
def test_bad_merge_specs_say_what_to_fix(path, message):
    with pytest.raises(InvalidSpec, match=message):
        helpers.cpu_spec({"path": path, "dataset": "d.csv"})


# ---- comparing methods ----------------------------------------------------------------------


def test_linear_slerp_and_ties_on_the_same_checkpoints_overlay_in_one_figure(fam):
    from basin import figures

    common = {"dataset": "eval.csv", "metrics": ["loss", "accuracy"]}
    docs = [run(helpers.cpu_spec({"path": path, **common}), FileResolver(root_of(fam)), progress=False)
            for path in ({"type": "linear", "a": "ft_a", "b": "ft_b", "points": 5},
                         {"type": "slerp", "a": "ft_a", "b": "ft_b", "points": 5},
                         {"type": "ties", "base": "init", "models": ["ft_a", "ft_b"], "points": 5})]
    # each run page draws its method's curve with its own coordinate and barrier
    assert figures.line_figure(docs[1], "loss").layout.xaxis.title.text == "t"
    ties_fig = figures.line_figure(docs[2], "loss")
    assert ties_fig.layout.xaxis.title.text == "λ"
    assert [t.text[0] for t in ties_fig.data if t.meta == "anchor"] == ["init", "ties merge (λ = 1)"]
    assert "barrier" in docs[2]["summary"] and docs[2]["summary"]["distance"] is None  # two models: no pair
    fig = figures.overlay_figure(docs, "loss")
    curves = [t for t in fig.data if t.meta == "curve"]
    assert [c.name.split(":")[0] for c in curves] == ["linear", "slerp", "ties"]
    assert all(len(c.x) == 5 for c in curves)
    assert fig.layout.xaxis.title.text == "α / t / λ"
    # the ends of linear and SLERP are the same two checkpoints: same losses there
    ends = [{p["coords"]["alpha"]: p["metrics"]["loss"] for p in d["points"]} for d in docs[:2]]
    assert ends[0][0.0] == pytest.approx(ends[1][0.0], abs=1e-6)
    assert ends[0][1.0] == pytest.approx(ends[1][1.0], abs=1e-5)
