"""YAML from an untrusted client, read as strictly as :mod:`basin.strict_json` reads JSON.

``yaml.safe_load`` runs no code (no ``!!python/…`` tags), but a request body is still
hostile text:

- **aliases** — ``*name`` repeats a node by reference, so nine lines of nine aliases each
  stand for 9⁹ ≈ 387 million items: nothing is copied while loading, but anything that walks
  the result (a validator, an error message that quotes a value, ``json.dumps``) walks them
  all (an API request spent 48 s writing one such error). A spec has no use for them:
  refused, as is a merge key ``<<`` (it reads an alias's mapping);
- **nesting** — PyYAML composes nodes recursively: ``[[[[…`` ends in a ``RecursionError``;
  refused beyond :data:`basin.strict_json.MAX_DEPTH` levels, before the recursion;
- **numbers** — ``.nan``, ``.inf`` and an integer of more digits than Python converts
  (a ``ValueError`` from inside the loader) are refused like JSON's;
- **types JSON has not** — a date stays the text it was written as; sets, binary and
  other tags are refused.

:func:`loads` returns plain JSON data (dicts with text keys, lists, text, numbers, booleans,
None) or raises :class:`YamlRefused` (a ``ValueError``) saying what was refused.
"""

from __future__ import annotations

import math
from typing import Any

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from basin.strict_json import MAX_DEPTH


class YamlRefused(ValueError):
    """YAML text a request may not send (see the module docstring)."""


class _Loader(yaml.SafeLoader):
    """``SafeLoader`` without aliases or merge keys, with bounded nesting; dates as text."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ComposerError(
                None,
                None,
                f"the alias *{event.anchor} is refused: anchors and aliases are not allowed in a "
                "request (write the value out)",
                event.start_mark,
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise ComposerError(
                    None,
                    None,
                    f"the YAML nests deeper than {MAX_DEPTH} levels",
                    self.peek_event().start_mark,
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def flatten_mapping(self, node: Any) -> None:
        for key, _ in node.value:
            if key.tag == "tag:yaml.org,2002:merge":
                raise ConstructorError(
                    None, None, "merge keys (<<) are not allowed in a request", key.start_mark
                )
        super().flatten_mapping(node)


# a date or a time is kept as the text written (JSON has no dates)
def _as_text(loader: _Loader, node: Any) -> str:
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _as_text)
# sets, binary, ordered maps, pairs: no constructor, so an unknown tag (a ConstructorError)
for _tag in (
    "tag:yaml.org,2002:set",
    "tag:yaml.org,2002:binary",
    "tag:yaml.org,2002:omap",
    "tag:yaml.org,2002:pairs",
):
    _Loader.yaml_constructors.pop(_tag, None)


def _check(value: Any) -> None:
    """Only JSON's types; finite numbers; text keys (iterative: the depth is bounded already)."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise YamlRefused(f"the key {str(k)[:40]!r} is not text: quote it")
                stack.append(item)
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise YamlRefused(f"{v} is not a number JSON allows: numbers must be finite")
        elif not (v is None or isinstance(v, (str, int, bool))):
            raise YamlRefused(
                f"a value of type {type(v).__name__} is not allowed (JSON's types only)"
            )


def loads(text: str | bytes) -> Any:
    """The one YAML document in ``text`` as JSON data; :class:`YamlRefused` when it is not
    YAML, not UTF-8, holds an alias, nests too deep, or holds a number or type JSON has not."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise YamlRefused(f"the YAML is not UTF-8 ({e})") from None
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader refuses non-printable characters here
        value = loader.get_single_data()
    except yaml.YAMLError as e:
        raise YamlRefused(f"the body is not YAML a request may send ({str(e)[:300]})") from None
    except (ValueError, OverflowError, RecursionError) as e:  # an int of 10⁵ digits, ...
        raise YamlRefused(f"the YAML holds a value that cannot be read ({str(e)[:200]})") from None
    finally:
        if loader is not None:
            loader.dispose()
    _check(value)
    return value


__all__ = ["YamlRefused", "loads"]
