"""Per-example forgetting along a 1D path (000 Q3): which examples are lost, where, and regained?

For every example classified correctly at the start of the path (θA, α = 0), walk the
evaluated points in increasing α up to the end (θB, α = 1) and record:

- ``alpha_lost``: the first α at which it is misclassified (``None``: never lost);
- ``regained``: whether it is classified correctly again at a later α (``None`` when
  never lost);
- ``confidence_at_start``: P(true label) at the start — how easy the example was for θA
  (000 relates where an example is lost to how hard it is);
- ``correct_at_end``: whether θB classifies it correctly.

The start and end are the barrier's: α = 0 and 1 when they are in the evaluated range
(on the grid, or evaluated off it and kept in ``summary.endpoints``), else the range's
ends. Needs a classification run with ``per_example: true`` (its point records carry
``examples: {loss, correct, confidence}`` in dataset order); the texts and labels come
from the dataset rows the run evaluated (:func:`basin.data.example_rows`).

Pure Python: the CLI (``basin forgetting``) and the API (``GET /api/runs/{id}/forgetting``)
both call :func:`forgetting` and :func:`forgetting_csv`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from basin.data import example_rows, file_sha256
from basin.errors import BasinError
from basin.tasks import keeps_column

COLUMNS = ("index", "text", "label", "alpha_lost", "regained", "confidence_at_start", "correct_at_end")
_EPS = 1e-9


class ForgettingUnavailable(BasinError):
    """The run cannot give a forgetting table (not 1D, not classification, no per-example results)."""


def _curve(result: Mapping[str, Any]) -> list[tuple[float, Mapping[str, Any]]]:
    """``[(α, examples)]`` of every point (and off-grid endpoint) that kept per-example values."""
    seen: dict[float, Mapping[str, Any]] = {}
    entries = list(result.get("points") or []) + [
        {"coords": {"alpha": e.get("alpha")}, **e} for e in (result.get("summary") or {}).get("endpoints") or []
    ]
    for p in entries:
        a = (p.get("coords") or {}).get("alpha")
        ex = p.get("examples")
        if isinstance(a, (int, float)) and isinstance(ex, Mapping) and "correct" in ex:
            seen.setdefault(float(a), ex)
    return sorted(seen.items())


def _pick(alphas: Sequence[float], target: float, fallback: float) -> float:
    near = min(alphas, key=lambda a: abs(a - target))
    return near if abs(near - target) <= 1e-6 else fallback


def forgetting(result: Mapping[str, Any], rows: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """The forgetting table of a result document (or a partial one: the points so far).

    ``rows``: the dataset rows the run evaluated (:func:`basin.data.example_rows`), for the
    ``text`` and ``label`` columns; without them those columns are empty. Returns
    ``{"start", "end", "rows": [{index, text, label, alpha_lost, regained,
    confidence_at_start, correct_at_end}], "histogram": [{alpha, lost}], "counts":
    {examples, correct_at_start, lost, regained, never_lost}}``. Raises
    :class:`ForgettingUnavailable` with what to change when the run cannot give one.
    """
    spec = result.get("spec") or {}
    if not keeps_column(spec.get("task", "classification"), "correct"):
        raise ForgettingUnavailable(f"forgetting needs a classification run (correct / wrong per example), "
                                    f"not task {spec.get('task')!r}")
    curve = _curve(result)
    if not curve:
        if any("alpha" not in (p.get("coords") or {}) for p in result.get("points") or []):
            raise ForgettingUnavailable("forgetting is defined along a 1D path (linear, bezier, polychain), "
                                        "not a plane")
        raise ForgettingUnavailable("this run kept no per-example results: run it again with "
                                    "per_example: true in its spec")
    alphas = [a for a, _ in curve]
    a0 = _pick(alphas, 0.0, alphas[0])
    a1 = _pick(alphas, 1.0, alphas[-1])
    if a1 <= a0:
        raise ForgettingUnavailable("forgetting needs at least two evaluated points along the path")
    path = [(a, ex) for a, ex in curve if a0 - _EPS <= a <= a1 + _EPS]
    start = path[0][1]
    n = len(start["correct"])
    if any(len(ex["correct"]) != n for _, ex in path):
        raise ForgettingUnavailable("points disagree on the number of examples; the result is inconsistent")
    if rows is not None and len(rows) != n:
        raise ForgettingUnavailable(f"the dataset has {len(rows)} rows for this run's settings but the run kept "
                                    f"{n} examples: the dataset changed since the run")
    conf = start.get("confidence") or [None] * n
    out_rows: list[dict[str, Any]] = []
    lost_at: dict[float, int] = {a: 0 for a, _ in path[1:]}
    for i in range(n):
        if not start["correct"][i]:
            continue
        alpha_lost = None
        regained = None
        for a, ex in path[1:]:
            ok = bool(ex["correct"][i])
            if alpha_lost is None and not ok:
                alpha_lost = a
                regained = False
                lost_at[a] += 1
            elif alpha_lost is not None and ok:
                regained = True
                break
        row = rows[i] if rows is not None else {}
        out_rows.append({
            "index": i,
            "text": row.get("text", ""),
            "label": row.get("label", ""),
            "alpha_lost": alpha_lost,
            "regained": regained,
            "confidence_at_start": conf[i],
            "correct_at_end": bool(path[-1][1]["correct"][i]),
        })
    lost = sum(1 for r in out_rows if r["alpha_lost"] is not None)
    return {
        "start": a0,
        "end": a1,
        "rows": out_rows,
        "histogram": [{"alpha": a, "lost": c} for a, c in sorted(lost_at.items())],
        "counts": {
            "examples": n,
            "correct_at_start": len(out_rows),
            "lost": lost,
            "regained": sum(1 for r in out_rows if r["regained"]),
            "never_lost": len(out_rows) - lost,
        },
    }


def dataset_rows(result: Mapping[str, Any], path: Path) -> list[dict[str, Any]]:
    """The rows of the dataset file ``path`` that ``result``'s run evaluated, in its order.

    The run's ``max_examples`` and ``seed`` pick them (:func:`basin.data.example_rows`); when
    the summary records the dataset's sha256 (runs with ``per_example``), a file that differs
    is refused rather than mislabelled.
    """
    spec = result.get("spec") or {}
    want = ((result.get("summary") or {}).get("examples") or {}).get("dataset_sha256")
    if want and file_sha256(Path(path)) != want:
        raise ForgettingUnavailable(f"dataset {Path(path).name} is not the file this run evaluated "
                                    f"(sha256 {want[:12]}…): give the run's dataset")
    return example_rows(path, max_examples=int(spec.get("max_examples", 512)), seed=int(spec.get("seed", 0)))


#: A cell a spreadsheet would run as a formula starts with one of these (OWASP "CSV injection").
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: Any) -> Any:
    """``value``, with a ``'`` in front when it is text a spreadsheet would run as a formula.

    Example texts come from uploaded datasets and the CSV is opened in spreadsheets by
    whoever follows a share link: ``=HYPERLINK(...)`` must stay text. Numbers are untouched
    (a negative α is a number, not a formula).
    """
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_START) else value


def forgetting_csv(table: Mapping[str, Any]) -> str:
    """The table's rows as CSV (:data:`COLUMNS`; empty cells for ``None``; texts spreadsheet-safe)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for r in table["rows"]:
        w.writerow(["" if r.get(c) is None else spreadsheet_safe(r.get(c)) for c in COLUMNS])
    return buf.getvalue()


__all__ = ["COLUMNS", "ForgettingUnavailable", "dataset_rows", "forgetting", "forgetting_csv", "spreadsheet_safe"]
