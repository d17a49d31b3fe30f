"""Whether runs can be drawn on one axis: the settings that change a run's numbers, compared.

An overlay of two runs reads as "same evaluation, different path". That holds only when the
runs score the same examples the same way: the same dataset and example subset (the first
``max_examples`` of it after a shuffle by ``seed``), the same task, truncation (``max_length``),
moving parameters (``scope``, ``space``, ``on_mismatch``), precision (``dtype``), tokenizer
and, for runs that generate, the same sampling and scoring. E.g. a SLERP run on 128 examples
over a linear run on 512 shows the same checkpoint at t = 0 as 0.433 in one and 0.371 in the
other. Pure Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: Spec fields whose difference changes the numbers (path fields are what an overlay compares).
NUMBER_FIELDS = (
    "dataset",
    "task",
    "max_examples",
    "seed",
    "max_length",
    "scope",
    "space",
    "on_mismatch",
    "dtype",
    "tokenizer",
)
#: Differences that make the curves different quantities: the overlay is refused.
REFUSE_FIELDS = ("task",)
#: Generation settings that do not change the numbers.
_GEN_COSMETIC = ("keep_samples",)


def _value(spec: Mapping[str, Any], field: str) -> Any:
    if field == "generation":
        gen = spec.get("generation")
        return (
            {k: v for k, v in gen.items() if k not in _GEN_COSMETIC}
            if isinstance(gen, Mapping)
            else gen
        )
    return spec.get(field)


def differences(specs: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Any]]]:
    """``[(field, [value of each run])]`` for every setting in which the runs differ."""
    out = []
    for field in (*NUMBER_FIELDS, "generation"):
        values = [_value(s, field) for s in specs]
        if any(v != values[0] for v in values[1:]):
            out.append((field, values))
    return out


def like_for_like(
    specs: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None
) -> tuple[bool, str]:
    """``(refuse, message)``: whether an overlay of runs with these specs must be refused, and the
    warning that names each differing setting and its value per run (``""`` when they agree)."""
    diffs = differences(specs)
    if not diffs:
        return False, ""
    names = list(labels) if labels else [f"run {k + 1}" for k in range(len(specs))]

    def show(v: Any) -> str:
        if isinstance(v, Mapping):
            return ", ".join(f"{k}={v[k]}" for k in sorted(v)) or "{}"
        return "—" if v is None else str(v)

    parts = []
    for field, values in diffs:
        if field == "generation":
            keys = sorted({k for v in values if isinstance(v, Mapping) for k in v})
            keys = [k for k in keys if len({repr((v or {}).get(k)) for v in values}) > 1]
            parts.append(
                "generation "
                + ", ".join(keys or ["settings"])
                + " ("
                + "; ".join(
                    f"{n}: {', '.join(f'{k}={(v or {}).get(k)}' for k in keys)}"
                    for n, v in zip(names, values, strict=True)
                )
                + ")"
            )
        else:
            parts.append(
                f"{field} ("
                + ", ".join(f"{n}: {show(v)}" for n, v in zip(names, values, strict=True))
                + ")"
            )
    refuse = any(f in REFUSE_FIELDS for f, _ in diffs)
    head = (
        "Not drawn: the runs measure different things — "
        if refuse
        else "Not like for like — the curves are not comparable point for point; they differ in "
    )
    return refuse, head + "; ".join(parts)


__all__ = ["NUMBER_FIELDS", "REFUSE_FIELDS", "differences", "like_for_like"]
