"""The dashboard's "Copy spec (YAML for basin eval)" runs as is with ``basin eval --store``
(issue 28, item 3): the copied text names checkpoints and datasets by store id (with their
names as comments); the CLI resolves them read-only against the store folder, through
:mod:`basin.store_reader` (no service code in the core). A browser test copies the spec
from the page itself (``tests/browser/test_newcomer.py``)."""

from __future__ import annotations

import json

import pytest
import yaml

from basin.cli import main
from frontend.components import spec_yaml
from service.store import Store


@pytest.fixture
def store_with_family(classifier_family, tmp_path):
    store = Store(tmp_path / "store")
    ids = {}
    ids["init"] = store.add_checkpoint_dir(classifier_family["init"], name="init")[
        "id"
    ]  # copied in
    ids["ft_a"] = store.add_checkpoint_dir(classifier_family["ft_a"], name="ft_a", copy=False)[
        "id"
    ]  # registered
    ids["ft_b"] = store.add_checkpoint_dir(classifier_family["ft_b"], name="ft_b")["id"]
    ids["data"] = store.add_dataset(classifier_family["data"], name="eval.csv")["id"]
    return store, ids


def _copied(tmp_path, ids, names, **path):
    spec = {
        "path": {"type": "linear", "a": ids["ft_a"], "b": ids["ft_b"], "points": 3, **path},
        "dataset": ids["data"],
        "metrics": ["loss", "accuracy"],
        "max_examples": 16,
    }
    f = tmp_path / "copied.yaml"
    f.write_text(spec_yaml(spec, names))  # exactly what the page's Copy spec gives
    return f


def test_a_copied_spec_runs_with_store_ids(store_with_family, tmp_path, monkeypatch, capsys):
    store, ids = store_with_family
    names = {v: k for k, v in ids.items()}
    f = _copied(tmp_path, ids, names)
    assert f"a: {ids['ft_a']}  # ft_a" in f.read_text()
    out = tmp_path / "r.json"
    monkeypatch.delenv("BASIN_STORE", raising=False)
    # without a store: refused, saying what to pass
    assert main(["eval", str(f), "-o", str(out), "-q"]) != 0
    assert "--store" in capsys.readouterr().err
    assert main(["eval", str(f), "-o", str(out), "-q", "--store", str(store.root)]) == 0
    doc = json.loads(out.read_text())
    assert len(doc["points"]) == 3 and all(p["metrics"]["loss"] > 0 for p in doc["points"])
    # BASIN_STORE does the same; names and id prefixes resolve too; a path still wins
    spec = yaml.safe_load(f.read_text())
    spec["path"]["a"], spec["path"]["b"] = "ft_a", ids["init"][:10]
    spec["dataset"] = "eval.csv"
    f.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("BASIN_STORE", str(store.root))
    assert main(["eval", str(f), "-o", str(out), "-q"]) == 0
    assert len(json.loads(out.read_text())["points"]) == 3


def test_an_unknown_store_reference_is_a_clear_error(store_with_family, tmp_path, capsys):
    store, ids = store_with_family
    f = _copied(tmp_path, {**ids, "ft_b": "nosuchcheckpoint"}, {})
    before = sorted(p.name for p in (store.root / "checkpoints").iterdir())
    assert (
        main(["eval", str(f), "-o", str(tmp_path / "r.json"), "-q", "--store", str(store.root)])
        != 0
    )
    assert (
        "no checkpoint named or with id 'nosuchcheckpoint' in the store" in capsys.readouterr().err
    )
    assert sorted(p.name for p in (store.root / "checkpoints").iterdir()) == before  # read only
