"""Strict numbers and bounded nesting in (``basin.strict_json.loads``), ``null`` out
(``finite``/``dumps``), and dataset lines bounded while they stream (issue 24 part 6-7)."""

from __future__ import annotations

import json
import math
import tracemalloc

import pytest

from basin import strict_json
from basin.data import iter_dataset_rows
from basin.errors import DatasetError


@pytest.mark.parametrize(
    "text", ['{"a": NaN}', "[Infinity]", '{"x": [1, -Infinity]}', '{"r": [0, 1e999]}', "[-1e400]"]
)
def test_non_finite_numbers_are_refused_with_a_reason(text):
    assert json.loads(text) is not None  # Python's own parser takes them all
    with pytest.raises(strict_json.JsonRefused, match="finite"):
        strict_json.loads(text)


def test_nesting_is_bounded_at_any_depth_without_a_recursion_error():
    ok = "[" * strict_json.MAX_DEPTH + "]" * strict_json.MAX_DEPTH
    assert strict_json.depth(strict_json.loads(ok)) == strict_json.MAX_DEPTH
    for depth in (strict_json.MAX_DEPTH + 1, 5_000, 1_000_000):
        with pytest.raises(strict_json.JsonRefused, match="nests deeper"):
            strict_json.loads("[" * depth + "]" * depth)
    with pytest.raises(strict_json.JsonRefused, match="nests deeper"):
        strict_json.loads('{"a": ' * 100 + "1" + "}" * 100)
    with pytest.raises(ValueError):  # not JSON at all: a plain ValueError, not a refusal
        strict_json.loads("{nope")


def test_a_diverged_value_is_null_out_and_finite_values_are_kept():
    point = {
        "index": 2,
        "coords": {"alpha": 1e30},
        "metrics": {"loss": math.nan, "acc": 0.5},
        "per": [math.inf, -math.inf, 1.0],
        "n": 3,
    }
    text = strict_json.dumps(point)
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {
        "index": 2,
        "coords": {"alpha": 1e30},
        "metrics": {"loss": None, "acc": 0.5},
        "per": [None, None, 1.0],
        "n": 3,
    }
    clean = {"a": [1.0, {"b": 2}]}
    assert strict_json.finite(clean) is clean  # nothing to replace: no copy


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("commas.csv", b"text,label\n" + b"," * (20 << 20) + b"\n"),
        ("tabs.tsv", b"text\tlabel\n" + b"\t" * (20 << 20) + b"\n"),
        (
            "long.jsonl",
            b'{"text": "a", "label": 0}\n{"text": "' + b"a" * (20 << 20) + b'", "label": 1}\n',
        ),
    ],
)
def test_an_over_long_line_is_refused_before_it_is_held(tmp_path, name, body):
    """A 20 MiB line of commas became 20 million fields (182 MB in the API) before its field
    count was checked; now it is refused after reading at most one line's limit."""
    path = tmp_path / name
    path.write_bytes(body)
    fmt = name.rsplit(".", 1)[1]
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="line 2 is longer than"):
            for _ in iter_dataset_rows(path, fmt):
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"reading it took {peak / 2**20:.0f} MiB"


def test_lines_under_the_limit_and_quoted_newlines_still_read(tmp_path):
    path = tmp_path / "ok.csv"
    path.write_text('text,label\n"two\nlines",1\n' + "x" * 100_000 + ",0\n")
    rows = list(iter_dataset_rows(path, "csv"))
    assert rows[0] == {"text": "two\nlines", "label": "1"} and len(rows[1]["text"]) == 100_000


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_spec_refuses_non_finite_numbers_wherever_it_comes_from(bad):
    """Not only JSON bodies: a YAML spec's ``.nan`` or a Python dict reaches the same models."""
    from basin.errors import InvalidSpec
    from basin.spec import parse_spec

    spec = {
        "path": {"type": "linear", "a": "x", "b": "y", "points": 3, "range": [0.0, bad]},
        "dataset": "d.csv",
    }
    with pytest.raises(InvalidSpec, match="finite"):
        parse_spec(spec)


@pytest.mark.parametrize(
    "text, says",
    [
        ("x: &a [1, 2]\ny: *a\n", "alias"),
        ("x: {<<: {a: 1}}\n", "merge keys"),
        ("x: " + "[" * 100_000 + "]" * 100_000, "deeper than"),
        ("x: .nan\n", "finite"),
        ("x: -.inf\n", "finite"),
        ("x: " + "9" * 5000, "cannot be read"),
        ("!!python/object/apply:os.system ['true']\n", "constructor"),
        ("x: !!set {1, 2}\n", "constructor"),
        ("x: !!binary aGVsbG8=\n", "constructor"),
        ("1: a\n", "not text"),
        ("a: 1\n---\nb: 2\n", "single document"),
        ("a: 1\x00", "not YAML"),
    ],
)
def test_yaml_from_a_request_is_read_as_strictly_as_json(text, says):
    """basin.strict_yaml (issue 24, the tune route's YAML): aliases, merge keys, deep nesting,
    non-finite or unreadable numbers, unsafe or non-JSON tags, several documents: refused
    with the reason; dates stay the text written."""
    from basin import strict_yaml

    with pytest.raises(strict_yaml.YamlRefused, match=says):
        strict_yaml.loads(text.encode())
    assert strict_yaml.loads(b"\xef\xbb\xbfname: 2001-12-14\nsteps: 3\nlr: [0.5]\n") == {
        "name": "2001-12-14",
        "steps": 3,
        "lr": [0.5],
    }
