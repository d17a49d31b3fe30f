"""Datasets the store accepts: their format (``jsonl`` / ``csv`` / ``tsv``), a full scan of
their rows and columns, and the tasks those columns serve.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from basin.data import REQUIRED, iter_dataset_rows
from basin.errors import DatasetError

#: Tasks a dataset can serve, and the columns each needs.
TASK_COLUMNS: dict[str, tuple[str, ...]] = dict(REQUIRED)
DATASET_FORMATS = ("jsonl", "csv", "tsv")


# ----------------------------------------------------------------------------- datasets


def detect_dataset_format(name: str, path: Path | None = None) -> str:
    """``jsonl`` / ``csv`` / ``tsv`` from the name's suffix (``.json`` counts as jsonl)."""
    suffix = Path(name).suffix.lower().lstrip(".")
    if suffix in ("json", "ndjson"):
        suffix = "jsonl"
    if suffix in DATASET_FORMATS:
        return suffix
    if path is not None:
        with open(path, "rb") as f:
            head = f.read(4096).lstrip()
        if head.startswith(b"{"):
            return "jsonl"
        first = head.split(b"\n", 1)[0]
        return "tsv" if b"\t" in first else "csv"
    raise DatasetError(f"dataset name {name!r} must end in .jsonl, .csv or .tsv")


def scan_dataset(path: Path, fmt: str) -> dict[str, Any]:
    """Parse the whole file: ``{columns, rows, tasks}``.

    ``columns`` in order of first appearance; ``tasks`` lists the tasks whose columns
    (:data:`TASK_COLUMNS`) every row has. No rows → :class:`DatasetError`.
    """
    columns: dict[str, None] = {}
    common: set[str] | None = None
    rows = 0
    for row in iter_dataset_rows(path, fmt):
        rows += 1
        for k in row:
            columns.setdefault(k, None)
        present = {k for k, v in row.items() if v is not None}
        common = present if common is None else common & present
    if rows == 0:
        raise DatasetError("the dataset has no rows")
    tasks = [t for t, need in TASK_COLUMNS.items() if set(need) <= (common or set())]
    return {"columns": list(columns), "rows": rows, "tasks": tasks}


def tasks_error(columns: list[str]) -> str:
    """The message for a dataset whose columns serve no task."""
    needs = "; ".join(f"{t} needs {' + '.join(c)}" for t, c in TASK_COLUMNS.items())
    return f"the dataset's columns ({', '.join(columns) or 'none'}) allow no task: {needs}"
