"""The cost estimate (issue 28, item 2): points × examples × this model at the rate measured
from this server's finished runs (else the documented fallback), a warning above ten minutes
with cheaper variants whose own estimates follow the same rate."""

from __future__ import annotations

import pytest

from service import estimate
from service.store import Store


@pytest.fixture
def store(classifier_family, tmp_path):
    s = Store(tmp_path / "store")
    ids = {
        n: s.add_checkpoint_dir(classifier_family[n], name=n, copy=False)["id"]
        for n in ("ft_a", "ft_b", "ft_c")
    }
    ids["data"] = s.add_dataset(classifier_family["data"], name="eval.csv")["id"]  # 64 rows
    s.ids = ids  # type: ignore[attr-defined]
    estimate._samples.clear()
    return s


def _spec(ids, **kw):
    path = kw.pop("path", {"type": "linear", "a": ids["ft_a"], "b": ids["ft_b"], "points": 5})
    return {"path": path, "dataset": ids["data"], "metrics": ["loss"], "max_examples": 16, **kw}


def _finished(store, run_id, spec, *, evaluations, eval_s, load_s=0.0):
    store.save_run(
        run_id,
        {
            "status": "done",
            "spec": spec,
            "points": [],
            "timings": {"evaluations": evaluations, "eval_s": eval_s, "load_s": load_s},
        },
    )


def test_without_finished_runs_the_documented_fallback_is_used(store):
    ids = store.ids
    params = store.get_checkpoint(ids["ft_a"])["num_parameters"]
    est = estimate.estimate(store, _spec(ids), 5)
    assert est.measured_runs == 0 and "no finished run" in est.basis
    assert est.work == 16 and est.parameters == params
    assert est.seconds == pytest.approx(5 * 16 * params * estimate.FALLBACK_S["score"])
    # max_examples above the dataset's rows: the rows are what a point scores
    assert estimate.estimate(store, _spec(ids, max_examples=512), 5).work == 64


def test_the_rate_is_measured_from_finished_runs_of_this_model(store):
    ids = store.ids
    # 4 points of 16 examples took 10 s of evaluation + 2 s of loading: 0.1875 s per point·16
    _finished(store, "r1", _spec(ids), evaluations=4, eval_s=10.0, load_s=2.0)
    est = estimate.estimate(store, _spec(ids, max_examples=32), 8, workers=2)
    assert est.measured_runs == 1 and "of this model" in est.basis
    assert est.seconds == pytest.approx(12.0 / 4 * 8 * 2)  # twice the examples, 8 points
    assert est.wall_s == pytest.approx(est.seconds / 2)  # spread over two workers
    # a failed or timing-less run gives no sample
    store.save_run("r2", {"status": "failed", "spec": _spec(ids), "points": []})
    assert estimate.estimate(store, _spec(ids), 4).measured_runs == 1


def test_a_long_run_is_warned_with_cheaper_variants(store):
    ids = store.ids
    _finished(store, "slow", _spec(ids), evaluations=1, eval_s=12.0)  # 12 s a point of 16 examples
    plane = _spec(
        ids,
        max_examples=64,
        path={
            "type": "plane",
            "a": ids["ft_a"],
            "b": ids["ft_b"],
            "c": ids["ft_c"],
            "resolution": [21, 21],
        },
    )
    out = estimate.summary(store, plane, 441, workers=1)
    assert out["seconds"] == pytest.approx(441 * 12.0 * 4)  # 4 × the examples
    assert out["warning"] and "more than 10 minutes" in out["warning"]
    tips = " | ".join(out["suggestions"])
    assert "refine: adaptive" in tips and "coarse-to-fine" in tips
    assert "resolution 11 × 11): 121 points" in tips
    assert "441 points" in out["words"] and "1 worker" in out["words"]
    # a short run: no warning
    short = estimate.summary(store, _spec(ids), 2, workers=1)
    assert short["warning"] is None and short["suggestions"] == []
