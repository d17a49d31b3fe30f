"""The run spec and grid order: what the CLI, API and form all accept, and the order points come in."""

from __future__ import annotations

import pytest
import yaml

from basin.errors import InvalidSpec
from basin.grid import order_1d, order_2d, unflatten
from basin.spec import load_spec, parse_spec


def test_defaults_are_filled_and_round_trip_through_yaml(tmp_path):
    spec = parse_spec({"path": {"type": "linear", "a": "x", "b": "y"}, "dataset": "d.csv"})
    assert spec.path.points == 26 and spec.path.range == (0.0, 1.0)
    assert spec.metrics == ["loss", "accuracy"] and spec.max_examples == 512
    f = tmp_path / "spec.yaml"
    f.write_text(spec.to_yaml())
    assert load_spec(f) == spec


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"path": {"type": "spiral", "a": "x"}, "dataset": "d"}, "unknown path type 'spiral'"),
        ({"path": {"type": "linear", "a": "x", "b": "y", "range": [1, 0]}, "dataset": "d"}, "increasing"),
        ({"path": {"type": "linear", "a": "x", "b": "y"}, "dataset": "d", "metrics": ["bleu"]}, "bleu"),
        ({"path": {"type": "plane", "a": "x", "b": "x", "c": "z"}, "dataset": "d"}, "three different"),
        ({"path": {"type": "trajectory", "checkpoints": ["a", "b"], "basis": ["o", "a", "a"]},
          "dataset": "d"}, "three different"),
        ({"path": {"type": "plane", "a": "x", "b": "y", "c": "z", "resolution": [1, 400]},
          "dataset": "d"}, "resolution"),
        ({"path": {"type": "linear", "a": "x", "b": "y"}}, "dataset"),
    ],
)
def test_bad_specs_say_what_is_wrong(data, needle):
    with pytest.raises(InvalidSpec, match=needle):
        parse_spec(data)


def test_unreadable_spec_file_is_one_clear_error(tmp_path):
    with pytest.raises(InvalidSpec, match="cannot read spec"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("path: [unclosed")
    with pytest.raises(InvalidSpec, match="not valid YAML"):
        load_spec(bad)


def test_map_refs_rewrites_every_checkpoint_and_the_dataset():
    spec = parse_spec({"path": {"type": "trajectory", "checkpoints": ["s1", "s2", "s3"],
                                "basis": ["s0", "s1", "s3"]}, "dataset": "tweets"})
    assert spec.checkpoint_refs() == ["s1", "s2", "s3", "s0"]
    mapped = spec.map_refs(lambda r: "id-" + r, lambda r: "ds-" + r)
    assert mapped.path.checkpoints == ["id-s1", "id-s2", "id-s3"]
    assert mapped.path.basis == ["id-s0", "id-s1", "id-s3"] and mapped.dataset == "ds-tweets"
    assert yaml.safe_load(mapped.to_yaml())["path"]["basis"] == ["id-s0", "id-s1", "id-s3"]


@pytest.mark.parametrize("n", [2, 3, 5, 26, 51])
def test_1d_order_starts_with_the_ends_and_refines(n):
    order = order_1d(n)
    assert sorted(order) == list(range(n))
    assert order[:2] == [0, n - 1]
    if n >= 5:  # the midpoint comes third, so a 3-point sketch of the curve appears first
        assert order[2] in (n // 2, (n - 1) // 2)


def test_2d_order_covers_the_plane_evenly_early():
    nx = ny = 21
    order = order_2d(nx, ny)
    assert sorted(order) == list(range(nx * ny))
    corners = {unflatten(i, (nx, ny)) for i in order[:4]}
    assert corners == {(0, 0), (20, 0), (0, 20), (20, 20)}
    # after the first 25 points every quadrant of the plane has been sampled
    quads = {(ix > 10, iy > 10) for ix, iy in (unflatten(i, (nx, ny)) for i in order[:25])}
    assert len(quads) == 4
