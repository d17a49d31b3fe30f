"""Curve fitting (``basin.fit``, ``basin fit``) on two tiny real BERT classifiers.

The pair is trained from *different random initialisations* on the synthetic sentiment
task, so the straight line between them climbs a clear barrier; a fitted quadratic
Bezier curve must get around it (Garipov et al. 2018; 000 Figs. 2–3). The saved control
point is evaluated with today's engine through the ``bezier`` / ``polychain`` paths and
checked against a plain re-computation of φ(t) (tests/core/helpers.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from basin import engine
from basin.errors import DatasetError, IncompatibleCheckpoints, InvalidSpec
from basin.fit import (
    FIT_META,
    curve_point,
    curve_run_data,
    estimate_memory,
    fit,
    knots,
    parse_fit_spec,
    read_fit_meta,
    save_control,
)
from basin.resolve import FileResolver
from basin.spec import parse_spec
from tests import factories
from tests.core import helpers
from tests.core.test_cli import assert_one_error_line, run_cli, write_spec

FIT = {"a": "a", "b": "b", "dataset": "train.csv", "eval_dataset": "eval.csv", "device": "cpu",
       "steps": 100, "lr": 1e-2, "batch_size": 16, "eval_points": 11}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    """Two tiny BERTs from different random inits, each fine-tuned 60 steps; train / eval sets."""
    root = tmp_path_factory.mktemp("fitpair")
    tok = factories.make_tokenizer("bert")
    for name, seed in (("a", 10), ("b", 11)):
        m = factories.init_classifier(seed, num_hidden_layers=2)
        factories.finetune_classifier(m, seed, steps=60, lr=5e-3)
        factories.save(m, root / name, tok)
    factories.write_classification_dataset(root / "train.csv", n=128, seed=5)
    factories.write_classification_dataset(root / "eval.csv", n=64, seed=6)
    (root / "empty.csv").write_text("text,label\n")
    other = factories.init_classifier(0, num_hidden_layers=2, hidden_size=16, intermediate_size=32)
    factories.save(other, root / "narrow", tok)
    return root


def spec(**kw):
    return parse_fit_spec({**FIT, **kw})


@pytest.fixture(scope="module")
def fitted(pair):
    """The Bezier fit of the pair (100 steps), saved as a control checkpoint."""
    steps: list[tuple[int, float, float | None]] = []
    res = fit(spec(), FileResolver(pair), on_step=lambda s, loss, eta: steps.append((s, loss, eta)))
    save_control(res, pair / "control")
    return res, steps


def evaluate(pair: Path, s, control: str | None, *, line: bool = False) -> dict:
    return engine.run(parse_spec(curve_run_data(s, control or "", line=line)), FileResolver(pair), progress=False)


def losses(doc: dict) -> list[float]:
    return [p["metrics"]["loss"] for p in doc["points"]]


def test_fitted_curve_removes_the_line_barrier(pair, fitted):
    s = spec()
    line = losses(evaluate(pair, s, None, line=True))
    curve_doc = evaluate(pair, s, str(pair / "control"))
    curve = losses(curve_doc)
    ends = max(line[0], line[-1])
    assert line[0] == pytest.approx(curve[0], abs=1e-6) and line[-1] == pytest.approx(curve[-1], abs=1e-6)
    assert max(line) - ends > 0.2, f"the pair should have a clear barrier on the line: {line}"
    # the fitted curve's highest loss is well below the line's, and about at the endpoints' level
    assert max(curve) < max(line) - 0.2, (line, curve)
    assert max(curve) < ends + 0.1
    assert curve_doc["summary"]["barrier"]["loss"]["value"] < 0.1


def test_fit_reports_progress_and_lowers_its_training_loss(fitted):
    res, steps = fitted
    assert [s for s, _, _ in steps] == list(range(1, 101))
    assert [v for _, v, _ in steps] == res.losses
    assert steps[-1][2] == pytest.approx(0.0) and all(eta is not None and eta >= 0 for _, _, eta in steps)
    # the curve starts as the straight line (midpoint control): its mean loss is the line's
    first = sum(res.losses[:10]) / 10
    assert res.final_loss is not None and res.final_loss < first
    assert res.status == "done"


def test_fit_is_reproducible_with_its_seed(pair):
    r = FileResolver(pair)
    one, two = fit(spec(steps=6), r), fit(spec(steps=6), r)
    assert one.losses == two.losses
    for k, v in one.controls[0].items():
        assert torch.equal(v, two.controls[0][k]), k
    other = fit(spec(steps=6, seed=1), r)
    assert other.losses != one.losses


def test_saved_control_reloads_and_gives_the_same_curve(pair, fitted):
    res, _ = fitted
    folder = pair / "control"
    meta = read_fit_meta(folder)
    assert meta is not None
    assert meta["fitted_from"] == {"a": str((pair / "a").resolve()), "b": str((pair / "b").resolve())}
    assert meta["curve"] == "bezier" and meta["steps"] == 100 and meta["seed"] == 0
    assert meta["dataset"]["ref"] == "train.csv" and meta["dataset"]["examples"] == 128
    assert meta["final_training_loss"] == pytest.approx(res.final_loss)
    assert {"config.json", "model.safetensors", "tokenizer.json", FIT_META} <= {p.name for p in folder.iterdir()}
    # the stored tensors are the fitted control point
    stored = load_file(str(folder / "model.safetensors"))
    for k, v in res.controls[0].items():
        assert torch.equal(stored[k], v), k
    # the engine's bezier path through the saved control = φ(t) recomputed from the three files
    s = spec()
    doc = evaluate(pair, s, str(folder))
    sa, sb, sc = helpers.state(pair / "a"), helpers.state(pair / "b"), helpers.state(folder)
    for p in doc["points"][::5]:
        t = p["coords"]["alpha"]
        ref = helpers.classify(pair / "a", helpers.mix([sa, sc, sb], [(1 - t) ** 2, 2 * t * (1 - t), t * t]),
                               pair / "eval.csv")
        assert p["metrics"]["loss"] == pytest.approx(ref["loss"], abs=1e-4), t


def test_scope_limits_what_moves(pair):
    r = FileResolver(pair)
    res = fit(spec(steps=3, scope="classifier"), r)
    assert set(res.controls[0]) == {"classifier.weight", "classifier.bias"}
    out = save_control(res, pair / "control-head")[0]
    stored, a = load_file(str(out / "model.safetensors")), helpers.state(pair / "a")
    for k, v in a.items():
        if not k.startswith("classifier."):
            assert torch.equal(stored[k], v), k  # outside the scope: θA, as along the fitted curve
    assert not torch.equal(stored["classifier.weight"], a["classifier.weight"])


def test_polychain_bend_is_evaluated_by_the_polychain_path(pair):
    s = spec(curve="polychain", steps=5, eval_points=3)
    out = save_control(fit(s, FileResolver(pair)), pair / "bend")[0]
    doc = evaluate(pair, s, str(out))
    mid = next(p for p in doc["points"] if p["coords"]["alpha"] == pytest.approx(0.5))
    ref = helpers.classify(pair / "a", helpers.state(out), pair / "eval.csv")
    assert mid["metrics"]["loss"] == pytest.approx(ref["loss"], abs=1e-4)  # φ(½) is the bend itself


def test_k_bends_are_saved_one_folder_each(pair):
    res = fit(spec(curve="polychain", bends=3, steps=2), FileResolver(pair))
    outs = save_control(res, pair / "bends3")
    assert [p.name for p in outs] == ["bend_1", "bend_2", "bend_3"]
    assert [read_fit_meta(p)["control_t"] for p in outs] == pytest.approx(knots(3))  # type: ignore[index]
    # the polychain passes through each bend at its knot
    a, b = torch.zeros(2), torch.ones(2)
    cs = [torch.full((2,), v) for v in (5.0, 6.0, 7.0)]
    for t, c in zip(knots(3), cs, strict=True):
        assert torch.allclose(curve_point("polychain", t, a, b, cs), c)
    assert torch.allclose(curve_point("polychain", 1.0, a, b, cs), b)


def test_cancel_stops_between_steps(pair):
    seen: list[int] = []
    res = fit(spec(steps=50), FileResolver(pair), should_stop=lambda: len(seen) >= 3,
              on_step=lambda s, loss, eta: seen.append(s))
    assert res.status == "cancelled" and len(res.losses) == 3


@pytest.mark.parametrize(("changes", "error", "needle"), [
    ({"steps": 0}, InvalidSpec, "steps must be at least 1"),
    ({"dataset": ""}, InvalidSpec, "training data"),
    ({"dataset": "empty.csv"}, DatasetError, "has no rows: a fit needs training data"),
    ({"dataset": "missing.csv"}, DatasetError, "not found"),
    ({"scope": "no_such_tensor"}, InvalidSpec, "matches no parameter"),
    ({"b": "narrow"}, IncompatibleCheckpoints, "incompatible"),
    ({"b": "a"}, InvalidSpec, "same checkpoint"),
    ({"curve": "bezier", "bends": 2}, InvalidSpec, "polychain"),
    ({"lr": 0}, InvalidSpec, "lr"),
])
def test_bad_fit_specs_are_refused_before_any_step(pair, changes, error, needle):
    calls: list[int] = []
    with pytest.raises(error) as e:
        fit(spec(**changes), FileResolver(pair), on_step=lambda s, loss, eta: calls.append(s))
    assert needle in str(e.value)
    assert calls == []


def test_memory_check_refuses_a_fit_that_does_not_fit(pair):
    with pytest.raises(InvalidSpec, match="needs about .* narrow the scope"):
        fit(spec(steps=1), FileResolver(pair), memory_limit=100_000)
    # the estimate: model + B + control + gradient + 2 Adam moments + φ(t) + activations
    parts = estimate_memory(1000, 100, 1, batch_size=2, max_length=4,
                            config={"hidden_size": 8, "num_hidden_layers": 2, "vocab_size": 10})
    assert parts["control"] == parts["gradients"] == 100 and parts["adam"] == 200
    assert parts["total"] == 1000 + 100 + 100 + 100 + 200 + 100 + 4 * 8 * (40 * 8 * 2 + 20)


def test_cli_fit_writes_control_and_both_barriers(pair, tmp_path):
    spec_file = write_spec(tmp_path / "fit.yaml", {**FIT, "a": str(pair / "a"), "b": str(pair / "b"),
                                                   "dataset": str(pair / "train.csv"),
                                                   "eval_dataset": str(pair / "eval.csv"),
                                                   "steps": 20, "eval_points": 5})
    proc = run_cli("fit", str(spec_file), "-o", str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "20/20" in proc.stderr and "basin fit bezier" in proc.stderr  # tqdm bar over the steps
    # what it trained on and what it is evaluated on (held out: no example in both)
    assert f"trained on 128 examples of {pair / 'train.csv'}; evaluating on 64 held-out examples" in proc.stderr
    line, curve = (next(x for x in proc.stdout.splitlines() if x.startswith(w))
                   for w in ("straight line, loss: ", "fitted bezier, loss: "))
    # the line between two inits has a barrier; the verdict names the path (linear vs this curve)
    assert "barrier" in line and "highest loss" in line and "highest loss" in curve
    assert "linearly connected" in line and "this curve" not in line  # (the interval's verdict)
    assert "connected along this curve" in curve and "linearly" not in curve
    out = tmp_path / "out"
    assert read_fit_meta(out / "control") is not None
    for name in ("line", "curve"):
        doc = json.loads((out / f"{name}.json").read_text())
        assert len(doc["points"]) == 5 and doc["spec"]["path"]["type"] == ("linear" if name == "line" else "bezier")
    log = json.loads((out / "fit.json").read_text())
    assert len(log["losses"]) == 20 and log["curve"] == "bezier"


def test_cli_fit_bad_spec_is_one_line(pair, tmp_path):
    spec_file = write_spec(tmp_path / "bad.yaml", {"a": str(pair / "a"), "b": str(pair / "b"),
                                                  "dataset": str(pair / "train.csv"), "steps": 0})
    proc = run_cli("fit", str(spec_file), cwd=tmp_path)
    assert_one_error_line(proc, "steps must be at least 1")
    assert not (tmp_path / "bad-fit").exists()
