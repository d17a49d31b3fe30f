"""Strict numbers and bounded nesting for JSON: no NaN or ±Infinity in, ``null`` out.

JSON has no NaN or Infinity, but Python's :mod:`json` reads and writes them (``NaN``,
``Infinity``, and a literal like ``1e999`` that overflows to ``inf``), and other parsers
(browsers' ``JSON.parse``, Starlette's responses) refuse them. So:

- **in** — :func:`loads` refuses non-finite numbers and nesting deeper than
  :data:`MAX_DEPTH` (a ``[[[[…`` of a million levels otherwise ends in a ``RecursionError``,
  which no caller expects), with a :class:`JsonRefused` (a ``ValueError``) that says which;
- **out** — :func:`finite` turns every non-finite float into ``None`` (a diverged point's
  loss is ``inf`` or ``nan``: it is written as ``null``) and :func:`dumps` writes strict JSON.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: Deepest nesting of arrays and objects :func:`loads` accepts (specs nest 3–4 levels,
#: safetensors headers 3, adapter configs 3, a Dash callback body with a figure about 12).
MAX_DEPTH = 64


class JsonRefused(ValueError):
    """Valid JSON to Python's parser that strict JSON refuses: a non-finite number, or nesting
    deeper than :data:`MAX_DEPTH`."""


def _constant(name: str) -> Any:
    raise JsonRefused(f"{name} is not a number JSON allows: numbers must be finite")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise JsonRefused(f"{text[:40]} is not a finite number (it overflows to {value})")
    return value


def depth(obj: Any) -> int:
    """How deeply arrays and objects nest in ``obj`` (a scalar: 0); iterative, any depth."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(obj, 0)]
    while stack:
        node, d = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            continue
        deepest = max(deepest, d + 1)
        stack.extend((c, d + 1) for c in children)
    return deepest


def loads(text: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH) -> Any:
    """``json.loads`` for untrusted text: :class:`JsonRefused` for NaN, ±Infinity, a number that
    overflows, or nesting deeper than ``max_depth``; ``ValueError`` for text that is not JSON."""
    try:
        value = json.loads(text, parse_constant=_constant, parse_float=_float)
    except RecursionError:
        raise JsonRefused(f"the JSON nests deeper than {max_depth} levels") from None
    if depth(value) > max_depth:
        raise JsonRefused(f"the JSON nests deeper than {max_depth} levels")
    return value


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, ±inf) replaced by ``None``, in dicts, lists and
    tuples at any depth; returns ``obj`` itself when it holds none (no copy)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        out = {k: finite(v) for k, v in obj.items()}
        return obj if all(out[k] is v for k, v in obj.items()) else out
    if isinstance(obj, list | tuple):
        items = [finite(v) for v in obj]
        return obj if all(a is b for a, b in zip(items, obj, strict=True)) else items
    return obj


def dumps(obj: Any, **kw: Any) -> str:
    """Strict JSON text of ``obj``: non-finite floats become ``null`` (:func:`finite`)."""
    return json.dumps(finite(obj), allow_nan=False, **kw)


__all__ = ["MAX_DEPTH", "JsonRefused", "depth", "dumps", "finite", "loads"]
