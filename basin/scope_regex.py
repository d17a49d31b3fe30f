"""Scope regexes, compiled with a linear-time engine (RE2).

A run's ``scope`` may be a regex over parameter names. Python's ``re`` backtracks: a
pattern such as ``^((\\w|\\.)+)+!$`` takes seconds to minutes per name, holding the GIL
of the process that matches it. RE2 (``google-re2``) matches in time linear in the
name, always; the price is that it has no backreferences (``\\1``) and no lookaround
(``(?=``, ``(?!``, ``(?<=``, ``(?<!``). Such patterns are refused with
:class:`~basin.errors.InvalidSpec`, as are patterns longer than the caller's cap (the API
passes ``BASIN_MAX_SCOPE_LENGTH``).

The API compiles a spec's scope with :func:`compile_scope` before it queues a run, and
the engine compiles it the same way when it selects the parameters that move.
"""

from __future__ import annotations

from typing import Protocol

import re2  # type: ignore[import-untyped]  # google-re2 ships no type information

from basin.errors import InvalidSpec


class ScopeRegex(Protocol):
    """What the engine uses of a compiled scope: ``search(name)`` (truthy on a match)."""

    def search(self, text: str) -> object: ...


def _options() -> re2.Options:
    opts = re2.Options()
    opts.log_errors = False  # the error goes to the user in InvalidSpec, not to stderr
    return opts


def compile_scope(pattern: str, *, max_length: int | None = None) -> ScopeRegex:
    """``pattern`` compiled by RE2 (linear-time matching), or :class:`InvalidSpec` naming the
    problem: longer than ``max_length`` (when given), or not RE2 syntax (backreferences,
    lookaround, unbalanced groups...). RE2 also refuses patterns whose compiled program is
    too large (e.g. ``a{1000}{1000}``)."""
    if max_length is not None and len(pattern) > max_length:
        raise InvalidSpec(
            f"scope regex is {len(pattern)} characters long; the limit is {max_length}"
        )
    try:
        return re2.compile(pattern, _options())
    except re2.error as e:
        why = e.args[0] if e.args else e
        if isinstance(why, bytes):
            why = why.decode("utf-8", "replace")
        raise InvalidSpec(
            f"scope {pattern!r} is neither a preset nor a regex Basin accepts: {why} "
            "(scope regexes use RE2 syntax, which matches in linear time: no backreferences "
            "such as \\1 and no lookaround such as (?=...) or (?<!...))"
        ) from None


__all__ = ["ScopeRegex", "compile_scope"]
