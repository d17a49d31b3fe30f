"""Evaluation datasets: CSV, TSV or JSONL files with the columns a task needs.

| task | columns |
|---|---|
| classification | ``text`` (+ optional ``text_pair``), ``label`` (int, or a string in the model's ``label2id``) |
| causal_lm | ``text`` |
| seq2seq | ``source``, ``target`` |

Subsampling to ``max_examples`` is deterministic: ``random.Random(seed)`` picks the
rows, which keep their file order.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from basin.errors import DatasetError

logger = logging.getLogger(__name__)

REQUIRED = {
    "classification": ("text", "label"),
    "causal_lm": ("text",),
    "seq2seq": ("source", "target"),
}
OPTIONAL = {"classification": ("text_pair",), "causal_lm": (), "seq2seq": ()}
FORMATS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}


@dataclass
class Dataset:
    """The rows of an evaluation set a run uses (after subsampling)."""

    path: Path
    sha256: str  # of the file's bytes: the dataset's identity in point keys
    task: str
    columns: dict[str, list[Any]] = field(default_factory=dict)
    num_rows_total: int = 0

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()), []))


def file_sha256(path: Path) -> str:
    """sha256 hex of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def read_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """``(column names, rows)`` of a CSV/TSV/JSONL file; :class:`DatasetError` when unreadable."""
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise DatasetError(f"dataset {p.name}: unknown format {p.suffix!r}; use .csv, .tsv or .jsonl")
    try:
        text = _decode(p.read_bytes())
    except OSError as e:
        raise DatasetError(f"dataset {p}: cannot read: {e.strerror}") from None
    rows: list[dict[str, Any]] = []
    if fmt == "jsonl":
        cols: list[str] = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise DatasetError(f"dataset {p.name}: line {i} is not valid JSON: {e}") from None
            if not isinstance(row, dict):
                raise DatasetError(f"dataset {p.name}: line {i} is not a JSON object")
            for k in row:
                if k not in cols:
                    cols.append(k)
            rows.append(row)
        return cols, rows
    reader = csv.DictReader(io.StringIO(text), delimiter="\t" if fmt == "tsv" else ",")
    try:
        rows = [dict(r) for r in reader]
    except csv.Error as e:
        raise DatasetError(f"dataset {p.name}: malformed {fmt.upper()}: {e}") from None
    return [c for c in (reader.fieldnames or []) if c is not None], rows


def _label(value: Any, row: int, label2id: Mapping[str, int] | None, path: Path) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    s = str(value).strip()
    try:
        return int(s)
    except ValueError:
        pass
    if label2id:
        if s in label2id:
            return int(label2id[s])
        lower = {k.lower(): v for k, v in label2id.items()}
        if s.lower() in lower:
            return int(lower[s.lower()])
    known = sorted(label2id) if label2id else []
    raise DatasetError(
        f"dataset {path.name}: row {row} has label {s!r}, which is neither an integer nor one of "
        f"the model's labels {known}"
    )


def load_dataset(
    path: str | Path,
    task: str,
    *,
    max_examples: int,
    seed: int = 0,
    label2id: Mapping[str, int] | None = None,
    num_labels: int | None = None,
) -> Dataset:
    """Read, validate and deterministically subsample a dataset for ``task``.

    Missing columns raise :class:`DatasetError` naming the file, the columns found and
    the ones needed; string labels map through ``label2id``; integer labels must lie in
    ``[0, num_labels)`` when ``num_labels`` is given.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"dataset {p} not found")
    cols, rows = read_rows(p)
    need = REQUIRED[task]
    missing = [c for c in need if c not in cols]
    if missing:
        raise DatasetError(
            f"dataset {p.name} lacks column(s) {missing} needed for task {task!r}: "
            f"found {cols}, need {list(need)}"
            + (f" (optional: {list(OPTIONAL[task])})" if OPTIONAL[task] else "")
        )
    if not rows:
        raise DatasetError(f"dataset {p.name} has no rows")
    n_total = len(rows)
    if n_total > max_examples:
        keep = sorted(random.Random(seed).sample(range(n_total), max_examples))
        picked = [(i, rows[i]) for i in keep]
    else:
        picked = list(enumerate(rows))
    wanted = list(need) + [c for c in OPTIONAL[task] if c in cols]
    columns: dict[str, list[Any]] = {c: [] for c in wanted}
    for i, row in picked:
        for c in wanted:
            v = row.get(c)
            if v is None:
                if c in need:
                    raise DatasetError(f"dataset {p.name}: row {i + 1} has no value for {c!r}")
                v = ""
            if c == "label":
                v = _label(v, i + 1, label2id, p)
                if num_labels is not None and not 0 <= v < num_labels:
                    raise DatasetError(
                        f"dataset {p.name}: row {i + 1} has label {v}, outside the model's "
                        f"{num_labels} classes [0, {num_labels - 1}]"
                    )
            else:
                v = str(v)
            columns[c].append(v)
    if "text_pair" in columns and all(not t for t in columns["text_pair"]):
        del columns["text_pair"]
    return Dataset(path=p, sha256=file_sha256(p), task=task, columns=columns, num_rows_total=n_total)
