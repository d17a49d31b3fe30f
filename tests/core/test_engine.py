"""Landscape behaviour: scope, point order, point keys, cancel, and errors on bad input."""

from __future__ import annotations

import shutil

import pytest
import torch

from basin import FileResolver, Landscape, run
from basin.errors import CheckpointError, DatasetError, InvalidSpec
from basin.grid import order_2d
from tests.core import helpers

LINEAR = {"type": "linear", "a": "ft_a", "b": "ft_b", "points": 3}


def _open(fam, path=LINEAR, **kw):
    spec = helpers.cpu_spec({"path": path, "dataset": "eval.csv", **kw})
    return Landscape.open(spec, FileResolver(fam["data"].parent))


@pytest.mark.parametrize(
    "scope, moved",
    [
        ("lower", lambda k: ".layer.0." in k),
        ("middle", lambda k: ".layer.1." in k),
        ("upper", lambda k: ".layer.2." in k),
        ("embeddings", lambda k: ".embeddings." in k),
        ("head", lambda k: k.startswith(("classifier.", "bert.pooler."))),
        (r"attention\.self\.(query|key)", lambda k: ".attention.self.query." in k or ".attention.self.key." in k),
    ],
)
def test_scope_moves_only_its_tensors(classifier_family, scope, moved):
    land = _open(classifier_family, scope=scope)
    a, b = helpers.state(classifier_family["ft_a"]), helpers.state(classifier_family["ft_b"])
    land.evaluate({"alpha": 1.0})
    live = dict(land.model.named_parameters())
    n_moved = 0
    for k, t in live.items():
        if moved(k):
            n_moved += 1
            torch.testing.assert_close(t, b[k], msg=k)
        else:
            assert torch.equal(t, a[k]), f"{k} should stay at θA under scope {scope}"
    assert n_moved == len(land.names) > 0
    land.close()


def test_scope_matching_nothing_is_invalid(classifier_family):
    with pytest.raises(InvalidSpec, match="matches no parameter"):
        _open(classifier_family, scope="no_such_tensor")
    with pytest.raises(InvalidSpec, match="regex"):
        _open(classifier_family, scope="(unclosed")


def test_plane_points_coarse_to_fine(classifier_family):
    land = _open(classifier_family, {"type": "task_plane", "origin": "init", "a": "ft_a", "b": "ft_b",
                                     "resolution": [5, 3], "range": [[0, 1], [0, 2]]})
    pts = land.points()
    assert [p.index for p in pts] == order_2d(5, 3)
    assert sorted(p.index for p in pts) == list(range(15))
    corners = {(p.coords["x"], p.coords["y"]) for p in pts[:4]}
    assert corners == {(0.0, 0.0), (1.0, 0.0), (0.0, 2.0), (1.0, 2.0)}
    p = land.point(7)  # row-major: iy = 1, ix = 2
    assert p.coords == {"x": 0.5, "y": 1.0}
    with pytest.raises(IndexError):
        land.point(15)
    land.close()


def test_point_key_identifies_metrics(classifier_family):
    l1 = _open(classifier_family)
    l2 = _open(classifier_family, batch_size=5)  # batch size does not change the metrics
    l3 = _open(classifier_family, max_examples=10)
    l4 = _open(classifier_family, scope="upper")
    p = l1.point(1)
    assert l1.point_key(p) == l2.point_key(p)
    assert l1.evaluate(p) == pytest.approx(l2.evaluate(p), abs=1e-6)
    keys = {l1.point_key(p), l3.point_key(p), l4.point_key(p), l1.point_key(l1.point(0))}
    assert len(keys) == 4
    swapped = _open(classifier_family, {"type": "linear", "a": "ft_b", "b": "ft_a", "points": 3})
    assert swapped.point_key(p) != l1.point_key(p)
    for land in (l1, l2, l3, l4, swapped):
        land.close()


def test_cancel_stops_between_points(classifier_family):
    spec = helpers.cpu_spec({"path": dict(LINEAR, points=9), "dataset": "eval.csv"})
    calls = []
    doc = run(spec, FileResolver(classifier_family["data"].parent), progress=False,
              on_point=calls.append, should_stop=lambda: len(calls) >= 3)
    assert doc["status"] == "cancelled" and len(doc["points"]) == 3
    assert [p["index"] for p in doc["points"]] == [0, 4, 8]


def test_subsampling_is_deterministic_and_bounded(classifier_family):
    l1 = _open(classifier_family, max_examples=10, seed=3)
    l2 = _open(classifier_family, max_examples=10, seed=3)
    l3 = _open(classifier_family, max_examples=10, seed=4)
    assert l1.data.columns == l2.data.columns and len(l1.data) == 10
    assert l1.data.columns != l3.data.columns
    for land in (l1, l2, l3):
        land.close()


def test_missing_files_give_clear_errors(classifier_family, tmp_path):
    root = classifier_family["data"].parent
    spec = helpers.cpu_spec({"path": dict(LINEAR, b="ft_missing"), "dataset": "eval.csv"})
    with pytest.raises(CheckpointError, match="ft_missing"):
        run(spec, FileResolver(root), progress=False)
    spec = helpers.cpu_spec({"path": LINEAR, "dataset": "nope.csv"})
    with pytest.raises(DatasetError, match="nope.csv"):
        run(spec, FileResolver(root), progress=False)


def test_dataset_without_needed_columns(classifier_family, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,y\ngood day,1\n")
    spec = helpers.cpu_spec({"path": {**LINEAR, "a": str(classifier_family["ft_a"]), "b": str(classifier_family["ft_b"])},
                       "dataset": str(bad)})
    with pytest.raises(DatasetError) as ei:
        Landscape.open(spec, FileResolver())
    msg = str(ei.value)
    assert "bad.csv" in msg and "sentence" in msg and "text" in msg and "label" in msg


def test_no_tokenizer_anywhere(classifier_family, tmp_path):
    d = tmp_path / "notok"
    d.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(classifier_family["ft_a"] / f, d / f)
    spec = helpers.cpu_spec({"path": {"type": "linear", "a": str(d), "b": str(d), "points": 2},
                       "dataset": str(classifier_family["data"])})
    with pytest.raises(CheckpointError, match="no tokenizer"):
        Landscape.open(spec, FileResolver())
    ok = helpers.cpu_spec({"path": {"type": "linear", "a": str(d), "b": str(d), "points": 2},
                     "dataset": str(classifier_family["data"]), "tokenizer": str(classifier_family["ft_b"])})
    land = Landscape.open(ok, FileResolver())
    assert land.evaluate({"alpha": 0.0})["accuracy"] > 0.5
    land.close()


def test_classification_with_string_labels(classifier_family, tmp_path):
    data = tmp_path / "named.jsonl"
    data.write_text('{"text": "good day", "label": "LABEL_1"}\n{"text": "bad day", "label": "label_0"}\n')
    spec = helpers.cpu_spec({"path": {"type": "linear", "a": str(classifier_family["ft_a"]),
                                "b": str(classifier_family["ft_b"]), "points": 2}, "dataset": str(data)})
    land = Landscape.open(spec, FileResolver())
    assert land.data.columns["label"] == [1, 0]
    land.close()
    data.write_text('{"text": "good day", "label": "positive"}\n')
    with pytest.raises(DatasetError, match="positive"):
        Landscape.open(spec, FileResolver())


def test_rows_with_an_empty_text_pair_are_encoded_as_single_sequences(classifier_family, tmp_path):
    import csv

    import transformers

    rows = helpers.rows(classifier_family["data"])[:8]
    pairs = ["", "so good", "", "very bad", "", "", "the day", ""]
    data = tmp_path / "pairs.csv"
    with open(data, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "text_pair", "label"])
        for r, p in zip(rows, pairs, strict=True):
            w.writerow([r["text"], p, r["label"]])
    ft_a = classifier_family["ft_a"]
    spec = helpers.cpu_spec({"path": {"type": "linear", "a": str(ft_a), "b": str(classifier_family["ft_b"]),
                                      "points": 2}, "dataset": str(data), "batch_size": 3})
    land = Landscape.open(spec, FileResolver())
    got = land.evaluate({"alpha": 0.0})["loss"]
    land.close()
    tok = transformers.AutoTokenizer.from_pretrained(str(ft_a))
    model = helpers.fresh("AutoModelForSequenceClassification", ft_a, helpers.state(ft_a))
    want = 0.0
    with torch.no_grad():
        for r, p in zip(rows, pairs, strict=True):
            enc = tok(r["text"], p, return_tensors="pt") if p else tok(r["text"], return_tensors="pt")
            want += float(torch.nn.functional.cross_entropy(model(**enc).logits, torch.tensor([r["label"]])))
    assert got == pytest.approx(want / len(rows), abs=1e-5)


def test_low_precision_point_keys_hold_the_batch_size(classifier_family):
    l1 = _open(classifier_family, dtype="bfloat16")
    l2 = _open(classifier_family, dtype="bfloat16", batch_size=5)
    p = l1.point(1)
    assert l1.point_key(p) != l2.point_key(p)  # padded shapes change bf16 rounding
    for land in (l1, l2):
        land.close()


def test_partial_range_barrier_is_labelled_in_the_summary_and_report(classifier_family):
    from basin.report import summarize as summary_text

    spec = helpers.cpu_spec({"path": {**LINEAR, "points": 3, "range": [0.2, 0.8]}, "dataset": "eval.csv"})
    doc = run(spec, FileResolver(classifier_family["data"].parent), progress=False)
    b = doc["summary"]["barrier"]["loss"]
    assert b["partial"] is True and (b["start"], b["end"]) == (0.2, 0.8)
    assert "partial-range barrier (chord α = 0.2 → 0.8)" in summary_text(doc)
    full = run(helpers.cpu_spec({"path": LINEAR, "dataset": "eval.csv"}),
               FileResolver(classifier_family["data"].parent), progress=False)
    assert full["summary"]["barrier"]["loss"]["partial"] is False
    assert "partial-range" not in summary_text(full)
