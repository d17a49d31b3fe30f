"""Studies of N checkpoints (issue 26), in-process: the clusters, the matrix against the pairs'
own runs, each checkpoint's own point evaluated once, coarse-then-refine, the pure parts
(groups, instability, the cluster rule, CSV) and the CLI."""

from __future__ import annotations

import csv
import io
import json

import pytest
import torch
from transformers import BertForSequenceClassification

from basin import engine
from basin.cli import main
from basin.drive import MemoryPointCache
from basin.resolve import FileResolver
from basin.study.matrix import build, cluster, to_csv
from basin.study.plan import StudySpec, parse_study, plan
from basin.study.run import run_study
from tests import factories


def study_spec(fam, **kw) -> StudySpec:
    data = {
        "name": "tiny",
        "checkpoints": [
            {"ref": str(fam["seed_a"]), "name": "A", "tags": {"seed": 1, "method": "full"}},
            {"ref": str(fam["seed_b"]), "name": "B", "tags": {"seed": 2, "method": "full"}},
            {"ref": str(fam["permuted"]), "name": "P", "tags": {"seed": 1, "method": "permuted"}},
        ],
        "dataset": str(fam["data"]),
        "max_examples": 256,
        "batch_size": 64,
    }
    data.update(kw)
    return parse_study(data)


@pytest.fixture(scope="module")
def study(study_family):
    return run_study(study_spec(study_family), FileResolver(), progress=False)


def test_permuted_copy_is_the_same_function(study_family):
    a = BertForSequenceClassification.from_pretrained(study_family["seed_a"]).eval()
    p = BertForSequenceClassification.from_pretrained(study_family["permuted"]).eval()
    assert not torch.equal(
        a.bert.encoder.layer[0].intermediate.dense.weight,
        p.bert.encoder.layer[0].intermediate.dense.weight,
    )
    enc = factories.make_tokenizer("bert")(
        [t for t, _ in factories.sentences(32, 4)], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        assert torch.allclose(a(**enc).logits, p(**enc).logits, atol=1e-5)


def test_study_puts_the_permuted_copy_in_its_own_cluster(study):
    names = {tuple(c["names"]) for c in study["clusters"]}
    assert names == {("A", "B"), ("P",)}, study["clusters"]
    assert study["complete"] and sorted(study["order"]) == [0, 1, 2]
    v = study["matrix"]["loss"]["verdict"]
    assert v[0][1] != "not connected" and "not connected" in (v[0][2], v[1][2])
    # same function: A and P have the same own metrics; each cluster's mean is its members'
    ck = study["checkpoints"]
    assert ck[0]["metrics"]["main"]["loss"] == pytest.approx(
        ck[2]["metrics"]["main"]["loss"], abs=1e-5
    )
    ab = next(c for c in study["clusters"] if c["names"] == ["A", "B"])
    assert ab["metrics"]["main"]["loss"] == pytest.approx(
        (ck[0]["metrics"]["main"]["loss"] + ck[1]["metrics"]["main"]["loss"]) / 2
    )


def test_each_checkpoint_is_evaluated_once_and_pairs_stop_when_decided(study):
    ev = study["evaluations"]
    assert ev["own"] == {"main:A": 1, "main:B": 1, "main:P": 1}  # 3 pairs × 2 ends, 3 evaluations
    assert ev["reused"] == 3
    total = sum(p["points"] for p in study["pairs"])
    assert ev["performed"] == total - 3
    assert ev["performed"] <= 0.3 * ev["full_runs"], ev  # 3 pairs × 25 points
    for p in study["pairs"]:
        said = p["barrier"]["loss"]["verdict"]
        if said == "not connected":
            assert p["points"] == 4  # the coarse grid decided it
        elif said == "connected":
            assert 4 < p["points"] < 8  # one wave beyond it
        else:
            assert p["points"] == 8  # the budget


def test_the_matrix_equals_the_pairs_own_runs(study, study_family):
    spec = study_spec(study_family)
    for p in study["pairs"]:
        doc = engine.run(spec.pair_spec(p["a"], p["b"]), FileResolver(), progress=False)
        assert len(doc["points"]) == p["points"]
        for m, cell in p["barrier"].items():
            own = doc["summary"]["barrier"][m]
            # the study's α = 1 is the other pair's α = 0 (θB itself, not θA + (θB − θA)): rounding apart
            assert cell["value"] == pytest.approx(own["value"], abs=1e-5)
            assert cell["ci"] == pytest.approx(own["ci"], abs=1e-4)
            assert cell["verdict"] == own["verdict"]
            assert (
                study["matrix"][m]["value"][p["a"]][p["b"]]
                == study["matrix"][m]["value"][p["b"]][p["a"]]
                == cell["value"]
            )


def test_a_checkpoints_own_point_has_one_key_in_every_pair(study_family):
    spec = study_spec(study_family)
    keys = {}
    for i, j in ((0, 1), (2, 0), (1, 2)):
        land = engine.Landscape.open(spec.pair_spec(i, j), FileResolver())
        try:
            keys[(i, j)] = (
                land.point_key({"alpha": 0.0}),
                land.point_key({"alpha": 1.0}),
                land.point_key({"alpha": 0.5}),
            )
        finally:
            land.close()
    assert keys[(0, 1)][0] == keys[(2, 0)][1]  # θA: α = 0 of (A, B), α = 1 of (P, A)
    assert keys[(0, 1)][1] == keys[(1, 2)][0]  # θB
    assert keys[(0, 1)][2] != keys[(2, 0)][2]
    # a store's manifest beside the weights (naming the checkpoint) is not part of the frame
    (study_family["permuted"] / "manifest.json").write_text('{"name": "permuted"}')
    try:
        land = engine.Landscape.open(spec.pair_spec(2, 0), FileResolver())
        try:
            assert land.point_key({"alpha": 1.0}) == keys[(0, 1)][0]
        finally:
            land.close()
    finally:
        (study_family["permuted"] / "manifest.json").unlink()
    # an ordinary run (not a study's) keeps its own keys
    plain = spec.pair_spec(0, 1).model_copy(update={"refine": None})
    land = engine.Landscape.open(plain, FileResolver())
    try:
        assert land.point_key({"alpha": 0.0}) != keys[(0, 1)][0]
    finally:
        land.close()
    # a scope that holds tensors at θA: α = 1 of (P, A) is not θA, so its key is not A's
    held = parse_study({**spec.model_dump(mode="json"), "scope": "upper"})
    land = engine.Landscape.open(held.pair_spec(2, 0), FileResolver())
    try:
        assert land.point_key({"alpha": 1.0}) != keys[(0, 1)][0]
    finally:
        land.close()


def test_phases_never_share_a_checkpoint_within_the_first_two():
    for n in range(2, 9):
        pairs = plan(n)
        assert sorted((min(p.a, p.b), max(p.a, p.b)) for p in pairs) == [
            (i, j) for i in range(n) for j in range(i + 1, n)
        ]
        first = [p for p in pairs if p.phase == 1]
        ends = [x for p in first for x in (p.a, p.b)]
        assert len(ends) == len(set(ends)) == 2 * (n // 2)
        assert len([p for p in pairs if p.phase == 2]) == n % 2


def _cell(v, lo, hi, verdict):
    return {"loss": {"value": v, "ci": [lo, hi], "verdict": verdict}}


def test_groups_instability_and_the_cluster_rule():
    tags = [
        {"seed": 1, "step": 0, "pair": "x"},
        {"seed": 2, "step": 0, "pair": "x"},
        {"seed": 1, "step": 100, "pair": "y"},
        {"seed": 2, "step": 100, "pair": "y"},
    ]
    cells = {
        (0, 1): _cell(0.3, 0.2, 0.4, "not connected"),
        (2, 3): _cell(0.0, 0.0, 0.01, "connected"),
        (0, 2): _cell(0.5, 0.4, 0.6, "not connected"),
        (0, 3): _cell(0.5, 0.4, 0.6, "not connected"),
        (1, 2): _cell(0.5, 0.4, 0.6, "not connected"),
        (1, 3): _cell(0.01, 0.0, 0.03, "inconclusive"),
    }
    res = build(["a", "b", "c", "d"], tags, ["loss"], cells, {"main": {}})
    assert [r["step"] for r in res["instability"]] == [0, 100]
    assert [r["value"] for r in res["instability"]] == [0.3, 0.0]
    g = res["groups"]["seed"]
    assert g["within"]["n"] == 2 and g["between"]["n"] == 4
    assert g["within"]["mean"] == pytest.approx((0.5 + 0.01) / 2)
    assert res["groups"]["step"]["within"]["verdicts"] == {
        "connected": 1,
        "not connected": 1,
        "inconclusive": 0,
    }
    # b–d inconclusive and c–d connected do not split, but b–c is not connected: {a}, {b, d} or {c, d}…
    clusters = [set(c["members"]) for c in res["clusters"]]
    assert sorted(x for c in clusters for x in c) == [0, 1, 2, 3]
    for c in clusters:
        assert all(
            cells.get((min(i, j), max(i, j)), {}).get("loss", {}).get("verdict") != "not connected"
            for i in c
            for j in c
            if i != j
        )
    assert {0} in clusters
    # a matrix with a pair missing is not clustered yet
    assert (
        cluster(["a", "b", "c"], [[0, 1, None], [1, 0, 1], [None, 1, 0]], [[None] * 3] * 3) is None
    )


def test_csv_exports(study):
    rows = list(csv.DictReader(io.StringIO(to_csv(study, "matrix"))))
    assert len(rows) == 3 * 2  # pairs × metrics
    assert {r["verdict"] for r in rows} <= {"connected", "not connected", "inconclusive"}
    members = list(csv.DictReader(io.StringIO(to_csv(study, "clusters"))))
    assert sorted(r["checkpoint"] for r in members) == ["A", "B", "P"]
    seeds = [r for r in csv.DictReader(io.StringIO(to_csv(study, "groups"))) if r["tag"] == "seed"]
    assert {r["side"] for r in seeds} == {"within", "between"}


def test_cli_study(study_family, tmp_path, capsys):
    spec = study_spec(study_family).model_dump(mode="json")
    (tmp_path / "study.json").write_text(json.dumps(spec))
    code = main(
        [
            "study",
            str(tmp_path / "study.json"),
            "-o",
            str(tmp_path / "out.json"),
            "--csv",
            str(tmp_path / "csv"),
            "-q",
        ]
    )
    assert code == 0
    out = json.loads((tmp_path / "out.json").read_text())
    assert {tuple(c["names"]) for c in out["clusters"]} == {("A", "B"), ("P",)}
    assert sorted(p.name for p in (tmp_path / "csv").iterdir()) == [
        "clusters.csv",
        "groups.csv",
        "matrix.csv",
    ]
    (tmp_path / "bad.json").write_text(json.dumps({**spec, "checkpoints": spec["checkpoints"][:1]}))
    capsys.readouterr()
    assert main(["study", str(tmp_path / "bad.json"), "-o", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "at least 2" in err[0], err


def test_shared_cache_is_what_saves_the_work(study_family):
    """Without sharing each pair would evaluate its two ends: 6, not 3."""
    spec = study_spec(study_family)
    cache = MemoryPointCache()
    res = run_study(spec, FileResolver(), progress=False, cache=cache)
    assert res["evaluations"]["reused"] == 3
    again = run_study(spec, FileResolver(), progress=False, cache=cache)  # all from the cache
    assert again["evaluations"]["performed"] == 0
    assert again["matrix"] == res["matrix"]


def test_extra_evaluation_sets_give_each_checkpoints_metrics_per_cluster(study_family, tmp_path):
    other = factories.write_classification_dataset(tmp_path / "other.csv", n=32, seed=9)
    res = run_study(
        study_spec(study_family, datasets={"other": str(other)}), FileResolver(), progress=False
    )
    own = res["evaluations"]["own"]
    assert {k: v for k, v in own.items() if k.startswith("other:")} == {
        "other:A": 1,
        "other:B": 1,
        "other:P": 1,
    }
    for c in res["checkpoints"]:
        assert set(c["metrics"]) == {"main", "other"} and "accuracy" in c["metrics"]["other"]
    for cl in res["clusters"]:
        assert cl["metrics"]["other"]["loss"] == pytest.approx(
            sum(res["checkpoints"][i]["metrics"]["other"]["loss"] for i in cl["members"])
            / len(cl["members"])
        )
    header = next(csv.reader(io.StringIO(to_csv(res, "clusters"))))
    assert "loss (other)" in header and "loss (main)" in header


def test_a_frame_is_what_builds_the_model_around_the_weights(tmp_path, study_family):
    from types import SimpleNamespace

    from basin.study.plan import frame_of

    spec = study_spec(study_family).pair_spec(0, 1)
    base = json.loads((study_family["seed_a"] / "config.json").read_text())

    def frame(config: dict, extra: dict[str, str] | None = None) -> str | None:
        d = tmp_path / f"c{len(list(tmp_path.iterdir()))}"
        d.mkdir()
        (d / "config.json").write_text(json.dumps(config))
        for name, text in (extra or {}).items():
            (d / name).write_text(text)
        return frame_of(spec, SimpleNamespace(config_dir=d, weights=d, adapter=None), None)

    same = frame(base)
    assert same is not None
    # bookkeeping a trained copy adds, and a store's manifest, change nothing
    assert (
        frame({**base, "problem_type": "single_label_classification", "_name_or_path": "x"}) == same
    )
    assert frame(base, {"manifest.json": '{"name": "other"}'}) == same
    # another head or tokenizer does
    assert frame({**base, "num_labels": 3, "id2label": {"0": "a", "1": "b", "2": "c"}}) != same
    assert frame(base, {"tokenizer.json": "{}"}) != same
    # an ordinary run shares nothing
    plain = spec.model_copy(update={"refine": None})
    assert (
        frame_of(
            plain,
            SimpleNamespace(
                config_dir=study_family["seed_a"], weights=study_family["seed_a"], adapter=None
            ),
            None,
        )
        is None
    )
