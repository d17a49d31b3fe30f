"""Intervals on every point, the barrier's paired bootstrap, and forgetting along a path.

The coverage checks are Monte Carlo over synthetic example sets whose true mean is known;
the engine checks run the tiny real classifiers and GPT-2s of ``tests/factories.py``.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest

from basin import FileResolver, Landscape, run
from basin.analysis.barrier import barrier_sentence
from basin.analysis.forgetting import ForgettingUnavailable, forgetting, forgetting_csv
from basin.analysis.uncertainty import (
    barrier_intervals,
    barrier_verdicts,
    mean_interval,
    pack_bootstrap,
    point_intervals,
    ratio_interval,
    unpack_bootstrap,
    wilson_interval,
)
from basin.cli import main
from basin.errors import InvalidSpec
from basin.figures import line_figure, plane_figure
from basin.report import summarize
from tests.core import helpers

# ---- coverage on known-variance example sets ----------------------------------------------

TRIALS = 600  # a coverage estimate within ±~2 pts (binomial SE √(.95·.05/600) ≈ 0.9 pts)


def _coverage(intervals: list[list[float] | None], truth: float) -> float:
    return sum(1 for iv in intervals if iv is not None and iv[0] <= truth <= iv[1]) / len(intervals)


def test_mean_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    # per-example losses: exponential with mean 0.7 (skewed like cross-entropies), n = 256
    ivs = [mean_interval(rng.exponential(0.7, size=256)) for _ in range(TRIALS)]
    assert 0.92 <= _coverage(ivs, 0.7) <= 0.98
    # the width shrinks like 1/√n: four times the examples, half the width
    w = [np.diff(mean_interval(rng.exponential(0.7, size=n)))[0] for n in (256, 1024) for _ in range(50)]
    assert np.mean(w[50:]) / np.mean(w[:50]) == pytest.approx(0.5, abs=0.06)


def test_wilson_interval_covers_accuracy_and_stays_in_0_1():
    rng = np.random.default_rng(2)
    ivs = [wilson_interval(float(rng.binomial(128, 0.85)), 128) for _ in range(TRIALS)]
    assert 0.92 <= _coverage(ivs, 0.85) <= 0.985
    lo, hi = wilson_interval(64, 64)  # 100 % accuracy: not the degenerate [1, 1]
    assert 0.9 < lo < 1.0 and hi == 1.0
    assert wilson_interval(0, 0) is None


def test_ratio_interval_covers_the_token_mean_loss():
    rng = np.random.default_rng(3)
    # texts of 5..40 tokens whose per-token NLL has a per-text offset (tokens of a text are
    # correlated): the true token-mean loss is E[Σ nll] / E[T] = 2.0
    def draw(n):
        t = rng.integers(5, 41, size=n).astype(float)
        per_token = 2.0 + rng.normal(0, 0.6, size=n)  # mean 2, text-level noise
        return per_token * t + rng.normal(0, 1.0, size=n) * np.sqrt(t), t
    ivs = [ratio_interval(*draw(200)) for _ in range(TRIALS)]
    assert 0.92 <= _coverage(ivs, 2.0) <= 0.98


def test_point_intervals_name_the_metrics_the_examples_determine():
    cls = {"loss": [0.1, 0.3, 0.2, 0.6], "correct": [True, True, False, True], "confidence": [0.9, 0.7, 0.4, 0.6]}
    iv = point_intervals(cls, ["loss", "accuracy", "f1"])
    assert set(iv) == {"loss", "accuracy"}  # macro F1 is not a mean over examples
    assert iv["loss"][0] < 0.3 < iv["loss"][1] and iv["accuracy"][0] < 0.75 < iv["accuracy"][1]
    lm = point_intervals({"nll": [4.0, 9.0, 2.0], "tokens": [2, 3, 1]}, ["loss", "perplexity"])
    assert lm["loss"][0] < 15 / 6 < lm["loss"][1]
    assert lm["perplexity"] == pytest.approx([math.exp(v) for v in lm["loss"]])


# ---- the barrier's paired bootstrap ---------------------------------------------------------


def _records(curve_means: list[float], n: int = 200, seed: int = 0) -> list[dict]:
    """Per-example losses along α = 0, .25, ..., 1: example i has difficulty d_i (shared by every
    α: the pairing) plus the curve's mean at that α."""
    rng = np.random.default_rng(seed)
    d = rng.normal(0, 0.5, size=n)
    alphas = [k / (len(curve_means) - 1) for k in range(len(curve_means))]
    out = []
    for k, (a, m) in enumerate(zip(alphas, curve_means, strict=True)):
        loss = m + d + rng.normal(0, 0.05, size=n)
        out.append({"index": k, "coords": {"alpha": a}, "metrics": {"loss": float(loss.mean())},
                    "examples": {"loss": loss.tolist(), "correct": [True] * n, "confidence": [0.5] * n}})
    return out


def _barrier(records):
    from basin.analysis import barriers

    return barriers(records, ["loss"], 0.0, 1.0)


def test_barrier_interval_contains_the_estimate_and_excludes_0_for_a_clear_bump():
    recs = _records([1.0, 1.2, 1.5, 1.2, 1.0])
    found = _barrier(recs)
    ci = barrier_intervals(recs, found, seed=0)["loss"]
    assert ci[0] <= found["loss"]["value"] <= ci[1]
    assert ci[0] > 0.3  # a 0.5 bump on a paired set: far from 0
    assert barrier_intervals(recs, found, seed=0)["loss"] == ci  # seeded
    # pairing matters: the per-example difficulty (sd 0.5) cancels in the excess over the chord,
    # so the interval is far narrower than the spread of one point's mean (sd ≈ 0.5/√200 · 1.96 · 2)
    assert ci[1] - ci[0] < 0.05


def test_barrier_interval_of_a_connected_path_reaches_0():
    recs = _records([1.0, 0.9, 0.85, 0.9, 1.0])  # below the chord everywhere inside
    found = _barrier(recs)
    fields = barrier_verdicts(recs, found, seed=0)["loss"]
    assert fields["ci"][0] == 0.0 and found["loss"]["value"] == 0.0
    # the band's upper end: every inside point is ≥ 0.1 below its chord, n = 200 → well below 0.02
    assert fields["ci"][1] <= 0.02 and fields["verdict"] == "connected" and fields["ci_method"] == "max-t band"
    doc = {"spec": {"path": {"type": "linear"}, "metrics": ["loss"]}, "points": recs,
           "summary": {"barrier": {"loss": {**found["loss"], **fields}}}}
    assert "linearly connected: the barrier is below 0.02 nats at the 95 % level" in summarize(doc)


@pytest.mark.parametrize(("ptype", "words"), [
    ("linear", "linearly connected"),
    ("bezier", "connected along this curve"),
    ("polychain", "connected along this curve"),
])
def test_the_verdict_says_linearly_only_for_a_straight_line(ptype, words):
    recs = _records([1.0, 0.9, 0.85, 0.9, 1.0])
    found = _barrier(recs)
    fields = barrier_verdicts(recs, found, seed=0)["loss"]
    doc = {"spec": {"path": {"type": ptype}, "metrics": ["loss"]}, "points": recs,
           "summary": {"barrier": {"loss": {**found["loss"], **fields}}}}
    text = summarize(doc)  # the report's and `basin eval`'s summary
    assert f"{words}: the barrier is below 0.02 nats at the 95 % level" in text
    if ptype != "linear":
        assert "linearly" not in text
    bump = _records([1.0, 1.2, 1.5, 1.2, 1.0])
    b = _barrier(bump)["loss"]
    entry = {**b, **barrier_verdicts(bump, {"loss": b}, seed=0)["loss"]}
    said = barrier_sentence(entry, "loss", magnitude=1.5, path_type=ptype)
    # at the path's own coordinate: α on a line, t along a curve
    coord = "α" if ptype == "linear" else "t (curve parameter)"
    assert said.startswith("barrier 0.") and f" nats at {coord} = 0.50 — " in said
    assert said.endswith(f"not {words}: the barrier is above 0 at the 95 % level")


def test_an_undecided_interval_says_inconclusive_and_how_many_examples_would_decide():
    # a small bump (0.01 nats) under noisy per-example deviations: n = 200 cannot tell it from 0
    # or from the 0.02 tolerance
    rng = np.random.default_rng(5)
    n = 200
    d, w = rng.normal(0, 0.5, n), rng.normal(0, 0.3, n)
    recs = [{"index": k, "coords": {"alpha": a}, "metrics": {},
             "examples": {"loss": (1.0 + d + w * 4 * a * (1 - a) + 0.01 * 4 * a * (1 - a)).tolist()}}
            for k, a in enumerate([0.0, 0.25, 0.5, 0.75, 1.0])]
    for r in recs:
        r["metrics"]["loss"] = float(np.mean(r["examples"]["loss"]))
    found = _barrier(recs)
    fields = barrier_verdicts(recs, found, seed=0)["loss"]
    assert fields["verdict"] == "inconclusive" and fields["ci"][0] == 0.0 and fields["ci"][1] > 0.02
    more = fields["examples_to_decide"]
    assert isinstance(more, int) and more > n
    said = barrier_sentence({**found["loss"], **fields}, "loss")
    assert said.endswith(f"inconclusive whether linearly connected: the barrier may be 0 or above 0.02 nats (95 %); about {more:,} "
                         f"examples would decide it (now {n})")
    # the band's width shrinks as 1/√n: with the number it asked for, the same curve decides
    rng = np.random.default_rng(6)
    d, w = rng.normal(0, 0.5, 4 * more), rng.normal(0, 0.3, 4 * more)
    big = [{"index": k, "coords": {"alpha": a}, "metrics": {},
            "examples": {"loss": (1.0 + d + w * 4 * a * (1 - a) + 0.01 * 4 * a * (1 - a)).tolist()}}
           for k, a in enumerate([0.0, 0.25, 0.5, 0.75, 1.0])]
    for r in big:
        r["metrics"]["loss"] = float(np.mean(r["examples"]["loss"]))
    assert barrier_verdicts(big, _barrier(big), seed=0)["loss"]["verdict"] != "inconclusive"


def test_an_interval_from_the_old_method_gets_no_verdict():
    entry = {"value": 0.01, "alpha": 0.5, "start": 0.0, "end": 1.0, "ci": [0.004, 0.02],
             "ci_method": "paired bootstrap over examples", "ci_draws": 1000}
    said = barrier_sentence(entry, "loss")
    assert "no verdict" in said and "connected" not in said


def test_no_barrier_interval_without_per_example_values():
    recs = _records([1.0, 1.2, 1.5, 1.2, 1.0])
    del recs[2]["examples"]
    assert barrier_intervals(recs, _barrier(recs), seed=0) == {}


# ---- forgetting ----------------------------------------------------------------------------


def _forget_doc() -> dict:
    # 5 examples at α = 0, .25, .5, .75, 1 (correct = 1)
    pattern = {
        0.0: [1, 1, 1, 0, 1],
        0.25: [1, 0, 1, 0, 1],
        0.5: [1, 0, 0, 1, 1],
        0.75: [1, 1, 0, 1, 0],
        1.0: [1, 1, 0, 1, 0],
    }
    conf0 = [0.9, 0.6, 0.7, 0.3, 0.55]
    pts = [{"index": k, "coords": {"alpha": a}, "metrics": {"accuracy": sum(c) / 5},
            "examples": {"loss": [0.1] * 5, "correct": [bool(v) for v in c],
                         "confidence": conf0 if a == 0.0 else [0.5] * 5}}
           for k, (a, c) in enumerate(pattern.items())]
    return {"spec": {"task": "classification", "path": {"type": "linear"}}, "points": pts}


def test_forgetting_alpha_lost_and_regained_by_hand():
    rows = [{"text": f"t{i}", "label": str(i % 2)} for i in range(5)]
    table = forgetting(_forget_doc(), rows)
    got = {r["index"]: (r["alpha_lost"], r["regained"], r["confidence_at_start"], r["correct_at_end"])
           for r in table["rows"]}
    assert got == {
        0: (None, None, 0.9, True),  # never lost
        1: (0.25, True, 0.6, True),  # lost at .25, back at .75
        2: (0.5, False, 0.7, False),  # lost at .5 for good
        4: (0.75, False, 0.55, False),  # lost at .75
    }  # example 3 was wrong at the start: not in the table
    assert table["histogram"] == [{"alpha": 0.25, "lost": 1}, {"alpha": 0.5, "lost": 1},
                                  {"alpha": 0.75, "lost": 1}, {"alpha": 1.0, "lost": 0}]
    assert table["counts"] == {"examples": 5, "correct_at_start": 4, "lost": 3, "regained": 1, "never_lost": 1}
    out = list(csv.DictReader(io.StringIO(forgetting_csv(table))))
    assert [r["text"] for r in out] == ["t0", "t1", "t2", "t4"]
    assert out[0]["alpha_lost"] == "" and out[1]["alpha_lost"] == "0.25" and out[1]["regained"] == "True"


def test_forgetting_csv_keeps_formulas_as_text():
    """An uploaded example text such as ``=HYPERLINK(...)`` is not run by the spreadsheet that opens the CSV."""
    rows = [{"text": t, "label": str(i % 2)} for i, t in
            enumerate(["=HYPERLINK(\"http://x\")", "+1", "-2+3", "@SUM(A1)", "plain"])]
    out = list(csv.DictReader(io.StringIO(forgetting_csv(forgetting(_forget_doc(), rows)))))
    assert [r["text"] for r in out] == ["'=HYPERLINK(\"http://x\")", "'+1", "'-2+3", "plain"]
    assert [r["confidence_at_start"] for r in out] == ["0.9", "0.6", "0.7", "0.55"]


def test_forgetting_says_what_is_missing():
    doc = _forget_doc()
    for p in doc["points"]:
        del p["examples"]
    with pytest.raises(ForgettingUnavailable, match="per_example: true"):
        forgetting(doc)
    with pytest.raises(ForgettingUnavailable, match="classification"):
        forgetting({**_forget_doc(), "spec": {"task": "causal_lm"}})
    with pytest.raises(ForgettingUnavailable, match="dataset changed"):
        forgetting(_forget_doc(), [{"text": "x", "label": 0}])


# ---- the engine: records, summary, figures, CLI ---------------------------------------------

SPEC = {"path": {"type": "linear", "a": "init", "b": "ft_a", "points": 5}, "dataset": "eval.csv",
        "max_examples": 48, "batch_size": 16}


@pytest.fixture(scope="module")
def kept(classifier_family):
    spec = helpers.cpu_spec({**SPEC, "per_example": True})
    return run(spec, FileResolver(classifier_family["data"].parent), progress=False)


def test_every_point_has_intervals_and_its_examples_in_dataset_order(kept, classifier_family):
    for p in kept["points"]:
        ex, iv, m = p["examples"], p["intervals"], p["metrics"]
        assert len(ex["loss"]) == len(ex["correct"]) == len(ex["confidence"]) == 48
        assert np.mean(ex["loss"]) == pytest.approx(m["loss"], abs=1e-6)
        assert np.mean(ex["correct"]) == pytest.approx(m["accuracy"])
        assert np.allclose(np.exp(-np.asarray(ex["loss"])), ex["confidence"], atol=1e-6)
        for k in ("loss", "accuracy"):
            assert iv[k][0] <= m[k] <= iv[k][1]
    # dataset order: the first example evaluated alone gives the first entry
    single = run(helpers.cpu_spec({**SPEC, "max_examples": 48, "batch_size": 1, "per_example": True}),
                 FileResolver(classifier_family["data"].parent), progress=False)
    assert single["points"][0]["examples"]["loss"] == pytest.approx(kept["points"][0]["examples"]["loss"],
                                                                    abs=1e-5)


def test_barrier_interval_in_the_summary_and_the_text(kept):
    b = kept["summary"]["barrier"]["loss"]
    assert b["ci"][0] <= b["value"] <= b["ci"][1] and b["ci_draws"] == 1000
    assert b["verdict"] in ("connected", "not connected", "inconclusive") and b["ci_examples"] == 48
    text = summarize(kept)
    assert f"barrier {b['value']:.3g} [{b['ci'][0]:.3g}, {b['ci'][1]:.3g}] nats at α = 0.50 — " in text
    assert "linearly connected" in text and ("95 %" in text)
    assert kept["summary"]["examples"]["count"] == 48


def test_without_per_example_the_barrier_still_gets_its_interval(classifier_family, kept):
    doc = run(helpers.cpu_spec(SPEC), FileResolver(classifier_family["data"].parent), progress=False)
    # no per-example outcomes in the records, only the compact columns the bootstrap needs
    assert all("intervals" in p and "examples" not in p and "bootstrap" in p for p in doc["points"])
    packed = doc["points"][0]["bootstrap"]
    assert packed["n"] == 48 and set(packed) == {"n", "loss", "correct"}
    assert len(json.dumps(packed)) < 48 * 4 * 2  # compact: base64 float32 + bits, not JSON floats
    # the same interval as the run that kept its per-example results (same examples, same seed)
    for m in ("loss", "accuracy"):
        b, k = doc["summary"]["barrier"][m], kept["summary"]["barrier"][m]
        assert b["ci"] == pytest.approx(k["ci"], abs=1e-6) and b["ci_draws"] == 1000
    assert "linearly connected" in summarize(doc)
    assert "examples" not in doc["summary"]  # (the per-example summary is per_example's only)


def test_pack_bootstrap_roundtrips_and_refuses_damage():
    ex = {"loss": [0.5, 1.25, 2.0], "correct": [True, False, True], "confidence": [0.6, 0.3, 0.1]}
    packed = pack_bootstrap(ex, ["loss", "accuracy"])
    assert set(packed) == {"n", "loss", "correct"}  # confidence is not needed for a barrier
    back = unpack_bootstrap(json.loads(json.dumps(packed)))
    assert back["loss"].tolist() == [0.5, 1.25, 2.0] and back["correct"].tolist() == [1.0, 0.0, 1.0]
    lm = pack_bootstrap({"nll": [3.5, 7.25], "tokens": [2, 5]}, ["loss", "perplexity"])
    assert unpack_bootstrap(lm)["tokens"].tolist() == [2.0, 5.0]
    assert unpack_bootstrap({**packed, "n": 4}) is None  # lengths disagree
    assert unpack_bootstrap({**packed, "loss": "not base64!"}) is None
    assert pack_bootstrap(ex, ["f1"]) is None


def test_lm_examples_are_per_text_sums_and_the_loss_is_their_ratio(gpt2_pair):
    spec = helpers.cpu_spec({"path": {"type": "linear", "a": "a", "b": "b", "points": 3},
                             "dataset": "lm.jsonl", "task": "causal_lm", "per_example": True})
    with Landscape.open(spec, FileResolver(gpt2_pair["data"].parent)) as land:
        rec = land.measure({"alpha": 0.5})
    ex = rec["examples"]
    assert sum(ex["nll"]) / sum(ex["tokens"]) == pytest.approx(rec["metrics"]["loss"], rel=1e-6)
    lo, hi = rec["intervals"]["loss"]
    assert lo < rec["metrics"]["loss"] < hi
    assert rec["intervals"]["perplexity"] == pytest.approx([math.exp(lo), math.exp(hi)])


def test_seq2seq_examples_are_per_target_sums(t5_pair):
    spec = helpers.cpu_spec({"path": {"type": "linear", "a": "a", "b": "b", "points": 3},
                             "dataset": "s2s.jsonl", "task": "seq2seq", "per_example": True})
    with Landscape.open(spec, FileResolver(t5_pair["data"].parent)) as land:
        rec = land.measure({"alpha": 0.5})
    ex = rec["examples"]
    assert len(ex["nll"]) == 32 and sum(ex["nll"]) / sum(ex["tokens"]) == pytest.approx(rec["metrics"]["loss"],
                                                                                        rel=1e-6)
    assert rec["intervals"]["loss"][0] < rec["metrics"]["loss"] < rec["intervals"]["loss"][1]


def test_per_example_spec_errors():
    with pytest.raises(InvalidSpec, match="per_example.*generation"):
        helpers.cpu_spec({**SPEC, "task": "generation", "per_example": True})
    with pytest.raises(InvalidSpec, match="lower max_examples"):
        helpers.cpu_spec({**SPEC, "max_examples": 1_000_000, "path": {**SPEC["path"], "points": 5},
                          "per_example": True})


def test_figures_draw_bands_and_plane_hover(kept):
    fig = line_figure(kept, "loss")
    assert fig.data[0].meta == "curve"  # the dashboard patches trace 0
    band = next(t for t in fig.data if t.meta == "band")
    his = [p["intervals"]["loss"][1] for p in sorted(kept["points"], key=lambda p: p["coords"]["alpha"])]
    assert band.fill == "toself" and list(band.y[: len(his)]) == pytest.approx(his)
    b = kept["summary"]["barrier"]["loss"]
    assert f"barrier {b['value']:.3g} [{b['ci'][0]:.3g}, {b['ci'][1]:.3g}] nats" in fig.layout.annotations[0].text
    plane = {"spec": {"path": {"type": "plane", "resolution": [2, 1]}, "metrics": ["accuracy"]},
             "points": [{"index": 0, "coords": {"x": 0.0, "y": 0.0}, "metrics": {"accuracy": 0.5},
                         "intervals": {"accuracy": [0.4, 0.6]}}]}
    heat = plane_figure(plane, "accuracy", "heatmap")
    assert heat.data[0].customdata[0][0] == "[40, 60]" and "%{customdata}" in heat.data[0].hovertemplate


def test_cli_forgetting_writes_the_csv(kept, classifier_family, tmp_path, capsys):
    result = tmp_path / "result.json"
    result.write_text(json.dumps(kept))
    out = tmp_path / "forgetting.csv"
    assert main(["forgetting", str(result), "-o", str(out), "--dataset", str(classifier_family["data"])]) == 0
    rows = list(csv.DictReader(out.open()))
    start = next(p for p in kept["points"] if p["coords"]["alpha"] == 0.0)["examples"]
    assert len(rows) == sum(start["correct"])
    texts = helpers.rows(classifier_family["data"])
    from basin.data import subsample

    picked = [texts[i]["text"] for i in subsample(len(texts), 48, 0)]
    assert all(r["text"] == picked[int(r["index"])] for r in rows)
    assert "examples correct at α = 0" in capsys.readouterr().err
    # a run without per-example results: one line saying what to do, exit 2
    plain = dict(kept, points=[{k: v for k, v in p.items() if k != "examples"} for p in kept["points"]])
    result.write_text(json.dumps(plain))
    assert main(["forgetting", str(result), "-o", str(out)]) == 2
    assert "per_example: true" in capsys.readouterr().err
