"""Every path type end to end on tiny real models, checked against independent computations."""

from __future__ import annotations

import math

import pytest
import torch

from basin import FileResolver, Landscape, run
from basin.errors import DegeneratePlane, InvalidSpec
from tests.core import helpers

TOL = 1e-5


def open_land(root, path, **kw):
    spec = helpers.cpu_spec({"path": path, "dataset": kw.pop("dataset", "eval.csv"), **kw})
    return Landscape.open(spec, FileResolver(root))


@pytest.fixture(scope="module")
def fam(classifier_family):
    return classifier_family


def root_of(fam):
    return fam["data"].parent


def test_linear_matches_fresh_model_including_extrapolation(fam):
    root = root_of(fam)
    land = open_land(root, {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 5, "range": [-0.5, 1.5]})
    a, b = helpers.state(fam["ft_a"]), helpers.state(fam["ft_b"])
    alphas = [p.coords["alpha"] for p in sorted(land.points(), key=lambda p: p.index)]
    assert alphas == [-0.5, 0.0, 0.5, 1.0, 1.5]
    for alpha in (-0.5, 0.5, 1.5, 1.0):
        got = land.evaluate({"alpha": alpha})
        want = helpers.classify(fam["ft_a"], helpers.mix([a, b], [1 - alpha, alpha]), fam["data"])
        assert abs(got["loss"] - want["loss"]) <= TOL, (alpha, got, want)
        assert abs(got["accuracy"] - want["accuracy"]) <= TOL
    land.close()


def test_linear_run_document(fam):
    seen = []
    spec = helpers.cpu_spec({"path": {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 5},
                       "dataset": "eval.csv", "metrics": ["loss", "accuracy", "f1"]})
    doc = run(spec, FileResolver(root_of(fam)), on_point=seen.append, progress=False)
    assert [p["index"] for p in seen] == [0, 4, 2, 1, 3]  # coarse to fine
    assert [p["index"] for p in doc["points"]] == [0, 1, 2, 3, 4]
    assert doc["spec"]["max_examples"] == 512 and doc["spec"]["path"]["range"] == [0.0, 1.0]
    assert doc["anchors"] == [{"name": "ft_a", "coords": {"alpha": 0.0}},
                              {"name": "ft_b", "coords": {"alpha": 1.0}}]
    assert set(doc["points"][0]["metrics"]) == {"loss", "accuracy", "f1"}
    assert 0.0 <= doc["points"][0]["metrics"]["f1"] <= 1.0
    bar = doc["summary"]["barrier"]["loss"]
    losses = {p["coords"]["alpha"]: p["metrics"]["loss"] for p in doc["points"]}
    excess = max(losses[x] - ((1 - x) * losses[0.0] + x * losses[1.0]) for x in losses)
    assert bar["value"] == pytest.approx(excess) and bar["value"] >= 0
    dist = doc["summary"]["distance"]
    assert dist["l2"] > 0 and -1 <= dist["cosine"] <= 1
    assert any(t["name"] == "classifier.weight" for t in dist["per_tensor"])
    assert [g["name"] for g in dist["per_layer"]][:2] == ["embeddings", "layer 0"]
    assert math.isclose(math.sqrt(sum(t["l2"] ** 2 for t in dist["per_tensor"])), dist["l2"], rel_tol=1e-9)
    t = doc["timings"]
    assert t["device"] == "cpu" and t["points_per_s"] > 0 and t["total_s"] >= t["eval_s"]


def test_bezier_and_polychain_hit_their_checkpoints(fam):
    root = root_of(fam)
    a, b, c = (helpers.state(fam[k]) for k in ("ft_a", "ft_b", "ft_c"))
    bez = open_land(root, {"type": "bezier", "a": "ft_a", "b": "ft_b", "control": "ft_c", "points": 3})
    t = 0.3
    want = helpers.classify(fam["ft_a"], helpers.mix([a, c, b], [(1 - t) ** 2, 2 * t * (1 - t), t * t]),
                            fam["data"])
    assert bez.evaluate({"alpha": t})["loss"] == pytest.approx(want["loss"], abs=TOL)
    end = helpers.classify(fam["ft_a"], b, fam["data"])
    assert bez.evaluate({"alpha": 1.0})["loss"] == pytest.approx(end["loss"], abs=TOL)
    bez.close()
    poly = open_land(root, {"type": "polychain", "a": "ft_a", "b": "ft_b", "control": "ft_c", "points": 3})
    mid = helpers.classify(fam["ft_a"], c, fam["data"])
    assert poly.evaluate({"alpha": 0.5})["loss"] == pytest.approx(mid["loss"], abs=TOL)
    q = helpers.classify(fam["ft_a"], helpers.mix([c, b], [0.5, 0.5]), fam["data"])
    assert poly.evaluate({"alpha": 0.75})["loss"] == pytest.approx(q["loss"], abs=TOL)
    assert [a.coords["alpha"] for a in poly.anchors] == [0.0, 0.5, 1.0]
    poly.close()
    with pytest.raises(InvalidSpec, match="polychain"):
        open_land(root, {"type": "polychain", "a": "ft_a", "b": "ft_b", "control": "ft_c", "range": [0, 2]})


def test_plane_value_at_each_anchor_is_that_checkpoint(fam):
    root = root_of(fam)
    land = open_land(root, {"type": "plane", "a": "ft_a", "b": "ft_b", "c": "ft_c", "resolution": [3, 3]})
    names = [a.name for a in land.anchors]
    assert names == ["ft_a", "ft_b", "ft_c"]
    assert land.anchors[0].coords == {"x": 0.0, "y": 0.0} and land.anchors[1].coords["y"] == 0.0
    a, b = helpers.state(fam["ft_a"]), helpers.state(fam["ft_b"])
    assert land.anchors[1].coords["x"] == pytest.approx(
        math.sqrt(sum(float(((b[k] - a[k]).double() ** 2).sum()) for k in land.names)), rel=1e-5)
    for anchor in land.anchors:
        want = helpers.classify(fam["ft_a"], helpers.state(fam[anchor.name]), fam["data"])
        got = land.evaluate(anchor.coords)
        assert got["loss"] == pytest.approx(want["loss"], abs=1e-4), anchor
        assert got["accuracy"] == pytest.approx(want["accuracy"], abs=TOL)
    # the grid covers the anchors' box plus a margin
    xs = sorted({p.coords["x"] for p in land.points()})
    assert xs[0] < 0 < land.anchors[1].coords["x"] < xs[-1]
    land.close()


def test_plane_through_collinear_checkpoints_is_degenerate(fam, tmp_path):
    a, b = helpers.state(fam["ft_a"]), helpers.state(fam["ft_b"])
    mid = tmp_path / "mid"
    mid.mkdir()
    from safetensors.torch import save_file

    save_file(helpers.mix([a, b], [0.5, 0.5]), str(mid / "model.safetensors"))
    spec = helpers.cpu_spec({"path": {"type": "plane", "a": str(fam["ft_a"]), "b": str(fam["ft_b"]),
                                "c": f"{mid / 'model.safetensors'}::{fam['ft_a']}"},
                       "dataset": str(fam["data"])})
    with pytest.raises(DegeneratePlane, match="collinear"):
        Landscape.open(spec, FileResolver())


def test_task_plane_at_1_0_is_theta_a(fam):
    land = open_land(root_of(fam), {"type": "task_plane", "origin": "init", "a": "ft_a", "b": "ft_b",
                                    "resolution": [4, 4]})
    assert [(a.name, a.coords) for a in land.anchors] == [
        ("init", {"x": 0.0, "y": 0.0}), ("ft_a", {"x": 1.0, "y": 0.0}), ("ft_b", {"x": 0.0, "y": 1.0})]
    want = helpers.classify(fam["ft_a"], helpers.state(fam["ft_a"]), fam["data"])
    assert land.evaluate({"x": 1.0, "y": 0.0})["loss"] == pytest.approx(want["loss"], abs=TOL)
    a, b, o = (helpers.state(fam[k]) for k in ("ft_a", "ft_b", "init"))
    want = helpers.classify(fam["ft_a"], helpers.mix([o, a, b], [1 - 0.5 - 2.0, 0.5, 2.0]), fam["data"])
    assert land.evaluate({"x": 0.5, "y": 2.0})["loss"] == pytest.approx(want["loss"], abs=TOL)
    assert len(land.points()) == 16
    land.close()


def test_random_plane_is_seeded_and_filter_normalised(fam):
    root = root_of(fam)
    path = {"type": "random_plane", "center": "ft_a", "resolution": [3, 3], "seed": 7}
    l1, l2 = open_land(root, path), open_land(root, path)
    l3 = open_land(root, dict(path, seed=8))
    assert l1.evaluate({"x": 0.5, "y": -0.5}) == l2.evaluate({"x": 0.5, "y": -0.5})
    assert l1.evaluate({"x": 0.5, "y": -0.5}) != l3.evaluate({"x": 0.5, "y": -0.5})
    centre = helpers.classify(fam["ft_a"], helpers.state(fam["ft_a"]), fam["data"])
    assert l1.evaluate({"x": 0.0, "y": 0.0})["loss"] == pytest.approx(centre["loss"], abs=TOL)
    a = helpers.state(fam["ft_a"])
    for name, d in zip(l1.names, l1.space.directions[0], strict=True):
        if d.dim() >= 2:  # each row of d has the norm of that row of θ
            torch.testing.assert_close(d.norm(dim=1), a[name].norm(dim=1), rtol=1e-4, atol=1e-6)
        else:  # ignore: biasbn
            assert not d.any()
    for land in (l1, l2, l3):
        land.close()


def test_trajectory_pca(fam):
    ckpts = ["ft_a-step10", "ft_a-step20", "ft_a-step30", "ft_a"]
    land = open_land(root_of(fam), {"type": "trajectory", "checkpoints": ckpts, "resolution": [3, 3]})
    assert [a.name for a in land.anchors] == ckpts
    assert land.anchors[-1].coords == pytest.approx({"x": 0.0, "y": 0.0}, abs=1e-4)
    summ = land.summary([])
    ev = summ["explained_variance"]
    assert 0.5 < ev <= 1.0
    per_dim = summ["trajectory"]["explained_variance"]
    assert per_dim[0] >= per_dim[1] > 0 and sum(per_dim) == pytest.approx(ev)
    # the projected coordinates are the least-squares (orthonormal) projections of θ_t − θ_final
    e1, e2 = land.space.directions
    assert sum(float((x * y).sum()) for x, y in zip(e1, e2, strict=True)) == pytest.approx(0.0, abs=1e-3)
    assert sum(float((x * x).sum()) for x in e1) == pytest.approx(1.0, rel=1e-4)
    fin = helpers.state(fam["ft_a"])
    first = helpers.state(fam["ft_a-step10"])
    x = sum(float(((first[k] - fin[k]) * d).sum()) for k, d in zip(land.names, e1, strict=True))
    assert land.anchors[0].coords["x"] == pytest.approx(x, rel=1e-3)
    # the trajectory moves: consecutive checkpoints are apart, and the grid covers them all
    xs = [p.coords["x"] for p in land.points()]
    assert min(xs) <= min(a.coords["x"] for a in land.anchors)
    land.close()


def test_trajectory_three_point_basis_projects_its_own_anchors(fam):
    land = open_land(root_of(fam), {"type": "trajectory", "checkpoints": ["ft_a", "ft_b", "ft_c"],
                                    "basis": ["ft_a", "ft_b", "ft_c"], "resolution": [3, 3]})
    plane = open_land(root_of(fam), {"type": "plane", "a": "ft_a", "b": "ft_b", "c": "ft_c",
                                     "resolution": [3, 3]})
    for got, want in zip(land.anchors, plane.anchors, strict=True):
        assert got.coords == pytest.approx(want.coords, rel=1e-4, abs=1e-4)
    assert land.summary([])["explained_variance"] == pytest.approx(1.0, abs=1e-4)
    land.close()
    plane.close()


def test_gpt2_linear_and_tied_weights(gpt2_pair):
    root = gpt2_pair["data"].parent
    land = open_land(root, {"type": "linear", "a": "a", "b": "b", "points": 3}, dataset="lm.jsonl",
                     task="causal_lm")
    a, b = helpers.state(gpt2_pair["a"]), helpers.state(gpt2_pair["b"])
    for alpha in (0.3, 1.2):
        got = land.evaluate({"alpha": alpha})
        want = helpers.causal_lm(gpt2_pair["a"], helpers.mix([a, b], [1 - alpha, alpha]), gpt2_pair["data"])
        assert got["loss"] == pytest.approx(want, abs=TOL)
        assert got["perplexity"] == pytest.approx(math.exp(want), rel=1e-5)
    m = land.model
    assert m.lm_head.weight.data_ptr() == m.transformer.wte.weight.data_ptr()
    torch.testing.assert_close(m.lm_head.weight, (-0.2 * a["transformer.wte.weight"] + 1.2 * b["transformer.wte.weight"]))
    land.close()


def test_gpt2_random_plane_run(gpt2_pair):
    root = gpt2_pair["data"].parent
    spec = helpers.cpu_spec({"path": {"type": "random_plane", "center": "a", "resolution": [2, 2]},
                       "dataset": "lm.jsonl", "task": "causal_lm"})
    doc = run(spec, FileResolver(root), progress=False)
    assert len(doc["points"]) == 4 and doc["summary"]["min"]["loss"]["value"] > 0


def test_t5_linear_matches_fresh_model(t5_pair):
    root = t5_pair["data"].parent
    land = open_land(root, {"type": "linear", "a": "a", "b": "b", "points": 3}, dataset="s2s.jsonl",
                     task="seq2seq", metrics=["loss", "perplexity"])
    a, b = helpers.state(t5_pair["a"]), helpers.state(t5_pair["b"])
    for alpha in (0.0, 0.5, 1.0):
        want = helpers.seq2seq(t5_pair["a"], helpers.mix([a, b], [1 - alpha, alpha]), t5_pair["data"])
        assert land.evaluate({"alpha": alpha})["loss"] == pytest.approx(want, abs=TOL)
    land.close()


def test_extrapolated_grid_without_0_and_1_still_measures_the_barrier_between_the_checkpoints(fam):
    # 6 points on [-0.5, 1.5] step by 0.4: α = 0 and 1 are not on the grid
    root = root_of(fam)
    spec = helpers.cpu_spec({"path": {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 6,
                                      "range": [-0.5, 1.5]}, "dataset": "eval.csv"})
    doc = run(spec, FileResolver(root), progress=False)
    assert all(abs(p["coords"]["alpha"]) > 1e-3 for p in doc["points"])
    ends = {e["alpha"]: e["metrics"] for e in doc["summary"]["endpoints"]}
    assert set(ends) == {0.0, 1.0}
    a, b = helpers.state(fam["ft_a"]), helpers.state(fam["ft_b"])
    assert abs(ends[0.0]["loss"] - helpers.classify(fam["ft_a"], a, fam["data"])["loss"]) <= TOL
    assert abs(ends[1.0]["loss"] - helpers.classify(fam["ft_a"], b, fam["data"])["loss"]) <= TOL
    barrier = doc["summary"]["barrier"]["loss"]
    assert (barrier["start"], barrier["end"]) == (0.0, 1.0)
    # the barrier is measured against the chord between θA and θB, over the points inside [0, 1]
    inside = [p for p in doc["points"] if 0 <= p["coords"]["alpha"] <= 1]
    want = max(p["metrics"]["loss"] - ((1 - p["coords"]["alpha"]) * ends[0.0]["loss"]
                                       + p["coords"]["alpha"] * ends[1.0]["loss"]) for p in inside)
    assert barrier["value"] == pytest.approx(max(want, 0.0), abs=1e-9)


def test_random_plane_ignore_none_follows_the_reference_on_1d_tensors(fam):
    # loss-landscape's normalize_directions_for_weights: a 1-D tensor's direction is the weights
    land = open_land(root_of(fam), {"type": "random_plane", "center": "ft_a", "resolution": [2, 2],
                                    "ignore": "none"})
    w = land.space.current()
    one_d = [(n, d) for n, d in zip(land.names, land.space.directions[0], strict=True) if d.dim() == 1]
    assert one_d
    for name, d in one_d:
        assert torch.equal(d, w[name]), name
    land.close()
