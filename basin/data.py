"""Evaluation datasets: CSV, TSV or JSONL files with the columns a task needs.

| task | columns |
|---|---|
| classification | ``text`` (+ optional ``text_pair``), ``label`` (int, or a string in the model's ``label2id``) |
| causal_lm | ``text`` |
| seq2seq | ``source``, ``target`` |
| generation | ``prompt`` (or ``text``, cut to its first ``generation.prompt_tokens`` tokens) |

Subsampling to ``max_examples`` is deterministic: ``random.Random(seed)`` picks the
rows, which keep their file order.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import logging
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from basin import strict_json
from basin.errors import DatasetError
from basin.tasks import TASKS, task_entry

logger = logging.getLogger(__name__)

#: Dataset columns each task needs / reads when present (its entry in :mod:`basin.tasks`).
REQUIRED = {t: e.columns for t, e in TASKS.items()}
OPTIONAL = {t: e.optional_columns for t, e in TASKS.items()}
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


def text_encoding(path: Path) -> str:
    """``utf-8-sig`` if the whole file decodes as UTF-8, else ``latin-1`` (tolerates the Latin-1 of scraped tweets)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                decoder.decode(chunk)
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return "latin-1"
    return "utf-8-sig"


#: Longest line of a dataset file, in characters (a CSV line of 20 MiB of commas would
#: otherwise become 20 million fields in memory before the field count is checked).
MAX_LINE_CHARS = 1 << 20
#: Most columns a CSV/TSV header may name.
MAX_COLUMNS = 1000


def bounded_lines(f: IO[str], limit: int = MAX_LINE_CHARS) -> Iterator[str]:
    """The lines of ``f`` (line endings kept), read at most ``limit`` + 1 characters at a time:
    a longer line is :class:`DatasetError` before it is ever held whole."""
    lineno = 0
    while True:
        line = f.readline(limit + 1)
        if not line:
            return
        lineno += 1
        if len(line) > limit and not line.endswith(("\n", "\r")):
            raise DatasetError(
                f"line {lineno} is longer than {limit:,} characters (the limit for one line)"
            )
        yield line


def iter_dataset_rows(path: Path, fmt: str) -> Iterator[dict[str, Any]]:
    """Rows of a dataset file as dicts; raises :class:`DatasetError` naming the bad line.

    Text is UTF-8, or Latin-1 when it is not valid UTF-8. Header names are stripped; a CSV row
    whose field count differs from the header's is refused rather than silently misread.
    """
    try:
        with open(path, encoding=text_encoding(path), newline="") as f:
            if fmt == "jsonl":
                for lineno, line in enumerate(bounded_lines(f), 1):
                    if not line.strip():
                        continue
                    try:
                        row = strict_json.loads(line)  # no NaN/Infinity, bounded nesting
                    except ValueError as e:
                        raise DatasetError(f"line {lineno} is not valid JSON: {e}") from None
                    if not isinstance(row, dict):
                        raise DatasetError(f"line {lineno} is not a JSON object")
                    yield row
            elif fmt in ("csv", "tsv"):
                reader = csv.reader(bounded_lines(f), delimiter="\t" if fmt == "tsv" else ",")
                header = next(reader, None)
                if not header or not any(h.strip() for h in header):
                    raise DatasetError(f"the {fmt.upper()} file has no header row")
                if len(header) > MAX_COLUMNS:
                    raise DatasetError(
                        f"the header has {len(header):,} columns; the limit is {MAX_COLUMNS:,}"
                    )
                header = [h.strip() for h in header]
                if len(set(header)) != len(header):
                    raise DatasetError(f"duplicate column names in the header: {header}")
                for row in reader:
                    if not row:
                        continue
                    if len(row) != len(header):
                        raise DatasetError(
                            f"line {reader.line_num} has {len(row)} fields, the header has "
                            f"{len(header)} ({', '.join(header)})"
                        )
                    yield dict(zip(header, row, strict=True))
            else:
                raise DatasetError(f"unknown dataset format {fmt!r}")
    except UnicodeDecodeError as e:
        raise DatasetError(f"the dataset is not UTF-8 text: {e}") from None
    except csv.Error as e:
        raise DatasetError(f"the {fmt.upper()} file does not parse: {e}") from None


def read_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    """``(column names, rows)`` of a CSV/TSV/JSONL file; :class:`DatasetError` when unreadable.

    The same reader the store validates uploads with (:func:`iter_dataset_rows`), so a
    dataset the store accepts reads the same way here.
    """
    p = Path(path)
    fmt = FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise DatasetError(f"dataset {p.name}: unknown format {p.suffix!r}; use .csv, .tsv or .jsonl")
    try:
        rows = list(iter_dataset_rows(p, fmt))
    except OSError as e:
        raise DatasetError(f"dataset {p}: cannot read: {e.strerror}") from None
    except DatasetError as e:
        raise DatasetError(f"dataset {p.name}: {e}") from None
    cols: list[str] = []
    for row in rows:
        cols.extend(k for k in row if k not in cols)
    return cols, rows


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


def subsample(n_total: int, max_examples: int, seed: int = 0) -> list[int]:
    """The rows a run evaluates, in file order: all of them, or ``max_examples`` picked by
    ``random.Random(seed)`` (the one rule, so per-example results map back to their rows)."""
    if n_total > max_examples:
        return sorted(random.Random(seed).sample(range(n_total), max_examples))
    return list(range(n_total))


def example_rows(path: str | Path, *, max_examples: int, seed: int = 0) -> list[dict[str, Any]]:
    """The raw rows a run with ``max_examples`` / ``seed`` evaluated, in its order (labels as
    written in the file): what per-example results (``examples``) are indexed by."""
    _, rows = read_rows(Path(path))
    return [rows[i] for i in subsample(len(rows), max_examples, seed)]


def load_dataset(
    path: str | Path,
    task: str,
    *,
    max_examples: int,
    seed: int = 0,
    label2id: Mapping[str, int] | None = None,
    num_labels: int | None = None,
    prompts_from_text: bool = False,
) -> Dataset:
    """Read, validate and deterministically subsample a dataset for ``task``.

    Missing columns raise :class:`DatasetError` naming the file, the columns found and
    the ones needed; string labels map through ``label2id``; integer labels must lie in
    ``[0, num_labels)`` when ``num_labels`` is given. ``prompts_from_text`` (generation with
    ``prompt_tokens``): a dataset without a ``prompt`` column gives its ``text`` column instead.
    """
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"dataset {p} not found")
    cols, rows = read_rows(p)
    need = task_entry(task).columns
    if task_entry(task).generates == "always" and "prompt" not in cols:
        if not prompts_from_text or "text" not in cols:
            raise DatasetError(
                f"dataset {p.name} has no 'prompt' column (found {cols}): give prompts in a 'prompt' column"
                + (", or a 'text' column to cut" if prompts_from_text else
                   ", or set generation.prompt_tokens to cut a 'text' column to its first N tokens")
            )
        need = ("text",)
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
    picked = [(i, rows[i]) for i in subsample(n_total, max_examples, seed)]
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
