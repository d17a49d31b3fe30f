"""The status vocabulary of every Basin job (runs, fits and the kinds added later).

One place: the service's Python, its Lua scripts (``service/runstate/lua/*.lua`` get these
names from a prelude generated here, :func:`lua_prelude`), the dashboard's pages and its
browser script (the page root carries :data:`TERMINAL` as ``data-terminal``) all read it.
No torch, no service code: the frontend imports it.

A job is ``queued`` until a worker takes it, ``running`` while one works on it, and ends
once, in one of :data:`TERMINAL`: ``done``, ``failed`` or ``cancelled``.
"""

from __future__ import annotations

from typing import Final, Literal

QUEUED: Final = "queued"
RUNNING: Final = "running"
DONE: Final = "done"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"

Status = Literal["queued", "running", "done", "failed", "cancelled"]

#: Every status, in the order a job goes through them.
STATUSES: Final = (QUEUED, RUNNING, DONE, FAILED, CANCELLED)
#: Not yet ended: a worker may still change it.
LIVE: Final = (QUEUED, RUNNING)
#: Ended: the status never changes again.
TERMINAL: Final = (DONE, FAILED, CANCELLED)

#: The dashboard's badge colour of each status (Bootstrap contextual colours).
COLOUR: Final = {
    DONE: "success",
    FAILED: "danger",
    CANCELLED: "secondary",
    RUNNING: "primary",
    QUEUED: "info",
}
#: The badge colour of a status this vocabulary does not know (e.g. ``deleted``).
UNKNOWN_COLOUR: Final = "dark"


def is_terminal(status: str | None) -> bool:
    """Whether ``status`` is an end (``done``, ``failed``, ``cancelled``)."""
    return status in TERMINAL


def colour(status: str | None) -> str:
    """The badge colour of ``status`` (:data:`UNKNOWN_COLOUR` for an unknown one)."""
    return COLOUR.get(status or "", UNKNOWN_COLOUR)


def lua_prelude() -> str:
    """Lua lines that define the vocabulary for a Redis script: ``QUEUED`` … ``CANCELLED``
    as string locals and ``TERMINAL`` as a set (``TERMINAL[st]`` is true for an end)."""
    names = " ".join(f"local {s.upper()} = '{s}'" for s in STATUSES)
    ended = ", ".join(f"[{s.upper()}] = true" for s in TERMINAL)
    return f"{names}\nlocal TERMINAL = {{{ended}}}\n"


__all__ = [
    "CANCELLED",
    "COLOUR",
    "DONE",
    "FAILED",
    "LIVE",
    "QUEUED",
    "RUNNING",
    "STATUSES",
    "TERMINAL",
    "UNKNOWN_COLOUR",
    "Status",
    "colour",
    "is_terminal",
    "lua_prelude",
]
