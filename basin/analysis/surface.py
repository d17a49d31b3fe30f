"""Summaries of a 2D surface: min and max of each metric with their coordinates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def extremes(results: Sequence[dict[str, Any]], metrics: Sequence[str]) -> tuple[dict, dict]:
    """``({metric: {value, coords}} of minima, same of maxima)`` over the evaluated points."""
    lo: dict[str, Any] = {}
    hi: dict[str, Any] = {}
    for r in results:
        for m in metrics:
            v = r.get("metrics", {}).get(m)
            if v is None:
                continue
            if m not in lo or v < lo[m]["value"]:
                lo[m] = {"value": v, "coords": dict(r["coords"])}
            if m not in hi or v > hi[m]["value"]:
                hi[m] = {"value": v, "coords": dict(r["coords"])}
    return lo, hi
