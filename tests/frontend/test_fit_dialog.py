"""The run page's "Fit a curve" dialog (issue 23 part 2): it trains on training data — the
split beside the run's dataset by name, else a held-out split of the run's own dataset — and
evaluates on exactly the run's examples."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def fit_page():
    from frontend.app import create_dash_app

    create_dash_app()  # registers the pages
    from frontend.pages import fit

    return fit


RUN = {
    "status": "done",
    "spec": {
        "path": {"type": "linear", "a": "A", "b": "B", "points": 11},
        "dataset": "ds-eval",
        "max_examples": 256,
        "seed": 3,
        "max_length": 64,
        "task": "classification",
        "scope": "all",
    },
}


def test_the_default_training_data_is_the_train_split_beside_the_runs_dataset(fit_page):
    stores = [
        {"id": "ds-eval", "name": "tweets-eval.csv", "rows": 256},
        {"id": "ds-train", "name": "tweets-train.csv", "rows": 4000},
        {"id": "ds-other", "name": "reviews.csv", "rows": 100},
    ]
    options, default = fit_page.training_options(RUN, stores)
    assert default == "ds-train"
    values = [o["value"] for o in options]
    assert (
        values[0] == fit_page.HOLDOUT and "ds-eval" not in values
    )  # never the run's own file as such
    assert "held-out split of tweets-eval.csv" in options[0]["label"]
    # no split by that name: the held-out split of the run's own dataset
    _, default = fit_page.training_options(RUN, [stores[0], stores[2]])
    assert default == fit_page.HOLDOUT


def test_the_fit_is_evaluated_on_the_runs_own_examples(fit_page):
    body = fit_page.fit_body_for_run(RUN, "ds-train", steps=50, curve="polychain", bends=2)
    assert (
        body["dataset"] == "ds-train"
        and body["eval_dataset"] == "ds-eval"
        and "holdout" not in body
    )
    assert (body["eval_max_examples"], body["seed"], body["max_length"], body["eval_points"]) == (
        256,
        3,
        64,
        11,
    )
    assert (body["steps"], body["curve"], body["bends"]) == (50, "polychain", 2)
    held = fit_page.fit_body_for_run(RUN, fit_page.HOLDOUT)
    assert held["dataset"] == held["eval_dataset"] == "ds-eval" and held["holdout"] is True
    assert held["curve"] == "bezier" and "bends" not in held
    assert fit_page.fit_body_for_run({**RUN, "status": "running"}) is None
