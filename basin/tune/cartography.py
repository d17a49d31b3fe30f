"""Dataset cartography (Swayamdipta et al. 2020): each training example's training dynamics.

At each of E cartography points e (a saved step, else an epoch's end, and the last
step) the trainer records p_e(i) = the model's probability of example i's gold label
(dropout off) and whether its argmax is the gold label. Per example:

    confidence  μ(i) = (1/E) Σ_e p_e(i)
    variability σ(i) = sqrt((1/E) Σ_e (p_e(i) − μ(i))²)      (population std, as in the paper)
    correctness c(i) = (1/E) Σ_e [argmax_e(i) = y(i)]

High μ / low σ: easy to learn; low μ / low σ: hard to learn; high σ: ambiguous.
:func:`dataset_map` is the pure computation (a test recomputes it by hand);
:func:`write_map` stores it as CSV beside the member (no pickle).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: Columns of ``cartography.csv`` before the per-point ``p@<step>`` columns.
COLUMNS = ("row", "label", "confidence", "variability", "correctness")


def dataset_map(
    probs: Sequence[Sequence[float]], correct: Sequence[Sequence[bool]]
) -> list[dict[str, float]]:
    """Confidence, variability and correctness of each example.

    ``probs[e][i]``: gold-label probability of example i at point e; ``correct[e][i]``:
    whether it was classified correctly there. Returns one ``{confidence, variability,
    correctness}`` per example, in example order. ``ValueError`` on ragged input or no points.
    """
    if not probs:
        raise ValueError("cartography needs at least one recorded point")
    n = len(probs[0])
    if (
        any(len(p) != n for p in probs)
        or len(correct) != len(probs)
        or any(len(c) != n for c in correct)
    ):
        raise ValueError("cartography: every point must record every example")
    e = len(probs)
    out = []
    for i in range(n):
        ps = [float(p[i]) for p in probs]
        mu = sum(ps) / e
        var = sum((p - mu) ** 2 for p in ps) / e
        out.append(
            {
                "confidence": mu,
                "variability": math.sqrt(var),
                "correctness": sum(1.0 for c in correct if c[i]) / e,
            }
        )
    return out


def write_map(
    path: Path,
    steps: Sequence[int],
    rows: Sequence[int],
    labels: Sequence[Any],
    probs: Sequence[Sequence[float]],
    correct: Sequence[Sequence[bool]],
) -> Path:
    """Write ``cartography.csv``: per training example its file ``row`` (0-based data row of
    the training file), ``label`` (class id), the three statistics and ``p@<step>`` at each
    point. Written to a temporary file and renamed."""
    stats = dataset_map(probs, correct)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([*COLUMNS, *(f"p@{s}" for s in steps)])
        for i, st in enumerate(stats):
            w.writerow(
                [
                    rows[i],
                    labels[i],
                    repr(st["confidence"]),
                    repr(st["variability"]),
                    repr(st["correctness"]),
                    *(repr(float(p[i])) for p in probs),
                ]
            )
    os.replace(tmp, path)
    return path


def read_map(path: Path) -> list[dict[str, Any]]:
    """``cartography.csv`` back as dicts (numbers parsed; ``p`` is the list of ``p@<step>``)."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        steps = [c for c in (reader.fieldnames or []) if c.startswith("p@")]
        out = []
        for r in reader:
            out.append(
                {
                    "row": int(r["row"]),
                    "label": int(r["label"]),
                    "confidence": float(r["confidence"]),
                    "variability": float(r["variability"]),
                    "correctness": float(r["correctness"]),
                    "p": [float(r[s]) for s in steps],
                    "steps": [int(s[2:]) for s in steps],
                }
            )
    return out


__all__ = ["COLUMNS", "dataset_map", "read_map", "write_map"]
