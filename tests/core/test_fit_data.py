"""What a curve fit trains on (issue 23 parts 2-3): never its evaluation's examples unless
asked, a held-out split of one file on request, the training split found by name, and an
unbiased step objective whatever the batches' sizes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from basin.errors import InvalidSpec
from basin.evaluate import EVALUATORS, load_tokenizer
from basin.fit import batch_loss, batch_weights, curve_run_data, fit, parse_fit_spec
from basin.fitdata import check_fit_data, example_hashes, fit_data, train_split_name
from basin.resolve import FileResolver
from basin.space import load_weights, make_model
from tests import factories

BASE = {"a": "a", "b": "b2", "device": "cpu", "batch_size": 16, "lr": 1e-12, "steps": 1}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """One tiny fine-tuned BERT saved as ``a`` and, a bit-for-bit copy, ``b2`` (so the curve
    between them is the point θA at every t); data files for the checks."""
    root = tmp_path_factory.mktemp("fitdata")
    tok = factories.make_tokenizer("bert")
    m = factories.init_classifier(10, num_hidden_layers=2)
    factories.finetune_classifier(m, 10, steps=60, lr=5e-3)
    factories.save(m, root / "a", tok)
    shutil.copytree(root / "a", root / "b2")
    factories.write_classification_dataset(root / "all.csv", n=96, seed=5)
    factories.write_classification_dataset(root / "tweets-train.csv", n=64, seed=7)
    factories.write_classification_dataset(root / "tweets-eval.csv", n=32, seed=8)
    # 16 short sentences and one long one: length-sorted batches of 16 are [16 short] + [1 long]
    short = [s for s in factories.sentences(200, 3) if len(s[0].split()) <= 8][:16]
    long = max(factories.sentences(200, 4), key=lambda s: len(s[0].split()))
    rows = [*short, (long[0], 1 - long[1])]  # the long one mislabelled: its loss stands out
    (root / "uneven.csv").write_text("text,label\n" + "".join(f"{t},{y}\n" for t, y in rows))
    return root


def spec(**kw):
    return parse_fit_spec({**BASE, **kw})


def test_a_fit_on_its_own_evaluation_examples_is_refused_unless_asked(folder):
    res = FileResolver(folder)
    s = spec(dataset="all.csv", max_examples=64)  # evaluated on the same file by default
    with pytest.raises(
        InvalidSpec,
        match=r"64 of the fit's 64 training examples are also among its 64 "
        r"evaluation examples \(the same file",
    ):
        fit(s, res)
    with pytest.raises(InvalidSpec, match="allow_overlap: true"):
        check_fit_data(s, res)  # what the API runs before queueing
    # another file with the same rows (a copy) is caught by content, not by name
    shutil.copyfile(folder / "all.csv", folder / "copy.csv")
    with pytest.raises(InvalidSpec, match="these files"):
        check_fit_data(spec(dataset="all.csv", eval_dataset="copy.csv", max_examples=64), res)
    # asked explicitly: allowed, and the metadata says how many overlap
    done = fit(spec(dataset="all.csv", max_examples=64, allow_overlap=True), res)
    assert done.meta["evaluation"]["overlap_with_training"] == 64
    # separate splits: no overlap, nothing to ask
    info = check_fit_data(spec(dataset="tweets-train.csv", eval_dataset="tweets-eval.csv"), res)
    assert info == {"train_examples": 64, "eval_examples": 32, "overlap": 0, "held_out": 0}


def test_holdout_trains_on_the_rows_the_evaluation_does_not_use(folder):
    res = FileResolver(folder)
    s = spec(dataset="all.csv", holdout=True, eval_max_examples=40, max_examples=1000, seed=3)
    got = fit_data(s, res)
    assert (len(got.train), got.eval_examples, got.held_out, got.overlap) == (56, 40, 40, 0)
    # the evaluation runs the fit queues use exactly the held-out examples: same file, seed, count
    run = curve_run_data(s, "ctrl", line=True)
    assert (run["dataset"], run["max_examples"], run["seed"]) == ("all.csv", 40, 3)
    from basin.data import load_dataset

    evaluated = load_dataset(folder / "all.csv", "classification", max_examples=40, seed=3)
    assert not set(example_hashes(evaluated)) & set(example_hashes(got.train))
    assert len(set(example_hashes(evaluated)) | set(example_hashes(got.train))) == 96
    # the training part is itself subsampled to max_examples, seeded
    small = fit_data(
        spec(dataset="all.csv", holdout=True, eval_max_examples=40, max_examples=20, seed=3), res
    )
    assert len(small.train) == 20 and set(example_hashes(small.train)) <= set(
        example_hashes(got.train)
    )
    with pytest.raises(InvalidSpec, match="holdout leaves no training rows"):
        fit_data(spec(dataset="all.csv", holdout=True, max_examples=512), res)


@pytest.mark.parametrize(
    ("name", "available", "want"),
    [
        ("tweets-eval.csv", ["tweets-eval.csv", "tweets-train.csv"], "tweets-train.csv"),
        (
            "sst2_validation.jsonl",
            ["sst2_train.jsonl", "sst2_validation.jsonl"],
            "sst2_train.jsonl",
        ),
        ("Reviews.Test.tsv", ["reviews.train.tsv"], "reviews.train.tsv"),
        ("dev.csv", ["train.csv", "dev.csv"], "train.csv"),
        (
            "tweets-eval.csv",
            ["tweets-eval.csv", "tweets-train.jsonl"],
            None,
        ),  # another format: not the split
        ("evaluation-set.csv", ["train-set.csv"], "train-set.csv"),
        ("medieval.csv", ["medtrain.csv"], None),  # not a word of its own
        ("tweets.csv", ["tweets-train.csv"], None),  # no split word to swap
    ],
)
def test_the_training_split_is_found_by_name(name, available, want):
    assert train_split_name(name, available) == want


def test_each_step_is_an_unbiased_sample_of_the_full_data_loss(folder):
    """The curve A→A is θA at every t, so a step's loss is its batch's mean loss at θA: over many
    steps the mean must be the full-data mean (the engine's loss), not the mean over batches —
    the short length-sorted last batch (here 1 long, mislabelled example) drawn uniformly
    weighs its example 8.5× (issue 23 part 3)."""
    res = FileResolver(folder)
    s = spec(dataset="uneven.csv", allow_overlap=True, steps=600, max_examples=17)
    # per-batch mean losses at θA, with the fit's own batches
    model = make_model("classification", folder / "a")
    from basin.checkpoints import load_state_dict
    from basin.data import load_dataset

    src = res.checkpoint("a")
    load_weights(model, load_state_dict(src), "classification")
    model.eval()
    data = load_dataset(folder / "uneven.csv", "classification", max_examples=17)
    ev = EVALUATORS["classification"](
        load_tokenizer([folder / "a"]),
        data,
        model,
        batch_size=16,
        max_length=128,
        device=torch.device("cpu"),
    )
    with torch.no_grad():
        per_batch = [float(batch_loss(ev, i, model(**b).logits)) for i, b in enumerate(ev.batches)]
    sizes = sorted(e - s for s, e in ev.spans)
    assert sizes == [1, 16] and batch_weights(ev) == [float(e - s) for s, e in ev.spans]
    full = sum(w * v for w, v in zip(batch_weights(ev), per_batch, strict=True)) / 17
    uniform = sum(per_batch) / len(per_batch)  # what drawing a batch uniformly averages to
    # the engine's loss at θA is the full-data mean
    from basin import engine
    from basin.spec import parse_spec

    doc = engine.run(
        parse_spec(
            {
                "path": {"type": "linear", "a": "a", "b": "b2", "points": 2},
                "dataset": "uneven.csv",
                "device": "cpu",
                "max_examples": 17,
            }
        ),
        res,
        progress=False,
    )
    assert doc["points"][0]["metrics"]["loss"] == pytest.approx(full, abs=1e-5)
    # Monte Carlo over the fit's own draws: within 4 standard errors of the full-data mean
    var = sum(w / 17 * (v - full) ** 2 for w, v in zip(batch_weights(ev), per_batch, strict=True))
    se = (var / s.steps) ** 0.5
    assert abs(uniform - full) > 10 * se  # the test can tell the two apart
    steps = fit(s, res).losses
    assert len(steps) == 600
    assert abs(sum(steps) / len(steps) - full) < 4 * se, (sum(steps) / len(steps), full, uniform)


def test_a_task_fit_py_does_not_name_gets_its_batch_weights_from_its_evaluator(folder):
    """Each task's evaluator owns its loss and its batches' weights (issue 22): an evaluator
    serving a task ``basin/fit.py`` does not name (here the classification evaluator of a task
    registered as ``classification_copy``, as a task module dropped in with its own evaluator
    would be) fits with no edit there; fit.py used to read the weights from the private fields
    of the three tasks it named and refuse any other."""
    from basin.data import load_dataset

    model = make_model("classification", folder / "a")
    model.eval()
    data = load_dataset(folder / "uneven.csv", "classification", max_examples=17)
    ev = EVALUATORS["classification"](load_tokenizer([folder / "a"]), data, model, batch_size=16,
                                      max_length=128, device=torch.device("cpu"))
    ev.task = "classification_copy"
    assert sorted(batch_weights(ev)) == [1.0, 16.0]  # one long example, 16 short ones
    # a task with nothing to differentiate still gets the one message
    with pytest.raises(InvalidSpec, match="does not know the loss of task 'generation'"):
        batch_weights(object.__new__(EVALUATORS["generation"]))


def test_basin_fit_refuses_to_evaluate_on_its_training_examples_in_one_line(folder, tmp_path):
    from tests.core.test_cli import assert_one_error_line, run_cli, write_spec

    spec_file = write_spec(
        tmp_path / "fit.yaml",
        {
            "a": str(folder / "a"),
            "b": str(folder / "b2"),
            "dataset": str(folder / "all.csv"),
            "steps": 5,
        },
    )
    proc = run_cli("fit", str(spec_file), cwd=tmp_path)
    assert_one_error_line(
        proc, "96 of the fit's 96 training examples are also among its 96 evaluation examples"
    )
    assert "holdout: true" in proc.stderr and not (tmp_path / "fit-fit").exists()
