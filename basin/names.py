"""Names people give things (checkpoints, datasets, runs, fits), normalised in one place.

A name is shown in lists, pickers, pages and reports, and found again by its text. So a
name must look like what it is: ``ft_a\\u200b`` (a zero-width space) displays as ``ft_a``
and a right-to-left override (``\\u202e``) reverses what follows it. :func:`clean_name`

- normalises to Unicode NFKC (full-width ``ｆｔ＿ａ`` is ``ft_a``, a no-break space is a space);
- refuses control characters, format characters (zero-width spaces and joiners, bidi
  embeddings / overrides / isolates / marks, the byte-order mark, soft hyphens…),
  surrogates, private-use and unassigned code points, and line / paragraph separators;
- trims surrounding whitespace and refuses an empty name or one over ``max_length``.

Letters of every script stay allowed (``名前`` is a fine name); names that differ only in
letters of different scripts that look alike (Latin ``a``, Cyrillic ``а``) are not caught.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping

from basin.errors import BasinError

MAX_NAME_LENGTH = 200
#: Unicode general categories a name may not contain
_REFUSED = {
    "Cc": "a control character",
    "Cf": "an invisible format character (zero-width or bidi)",
    "Cs": "a lone surrogate",
    "Co": "a private-use character",
    "Cn": "an unassigned code point",
    "Zl": "a line separator",
    "Zp": "a paragraph separator",
}


def clean_name(
    value: str,
    what: str = "name",
    *,
    max_length: int = MAX_NAME_LENGTH,
    error: type[BasinError] = BasinError,
) -> str:
    """``value`` normalised (NFKC, trimmed), or ``error`` naming the refused character."""
    if not isinstance(value, str):
        raise error(f"the {what} must be text, not {type(value).__name__}")
    name = unicodedata.normalize("NFKC", value).strip()
    for i, ch in enumerate(name):
        why = _REFUSED.get(unicodedata.category(ch))
        if why is not None:
            raise error(
                f"the {what} '{value[:60].encode('unicode_escape').decode()}' contains {why} "
                f"(U+{ord(ch):04X} at position {i}): names may hold only visible characters and spaces"
            )
    if not name:
        raise error(f"the {what} is empty")
    if len(name) > max_length:
        raise error(f"the {what} is {len(name)} characters long; the limit is {max_length}")
    return name


def optional_name(value: str | None, what: str = "name") -> str | None:
    """For a pydantic validator: ``None`` stays, text is :func:`clean_name`'d (``ValueError`` when refused)."""
    if value is None:
        return None
    try:
        return clean_name(value, what)
    except BasinError as e:
        raise ValueError(str(e)) from None


__all__ = ["MAX_NAME_LENGTH", "clean_name", "optional_name"]


_STORE_ID = re.compile(r"\b[0-9a-f]{64}\b")


def name_ids(text: str, names: Callable[[str], str | None] | Mapping[str, str]) -> str:
    """``text`` with every 64-hex store id replaced by its name (``names``: a mapping or a
    lookup returning None for an unknown id, which is left as it is: a hash a message reports)."""
    look = names.get if isinstance(names, Mapping) else names

    def one(m: re.Match[str]) -> str:
        name = look(m.group(0))
        return name if name else m.group(0)

    return _STORE_ID.sub(one, text)
