"""Exceptions raised by the core library.

Services map these to responses (the backend to 4xx JSON, the CLI to one line and
exit code 2); nothing in the core catches them silently.
"""

from __future__ import annotations


class BasinError(Exception):
    """Base class: a problem with the user's input, explained in ``str(err)``."""


class InvalidSpec(BasinError):
    """The run spec is malformed or inconsistent (unknown path type, bad range...)."""


class CheckpointError(BasinError):
    """A checkpoint cannot be read: missing, malformed, or an unsafe format."""


class IncompatibleCheckpoints(BasinError):
    """The picked checkpoints do not share keys / shapes / dtypes.

    ``mismatches`` lists ``(tensor_name, reason)`` pairs, so callers can name them.
    """

    def __init__(self, message: str, mismatches: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.mismatches = list(mismatches or [])


class DatasetError(BasinError):
    """A dataset is missing, unreadable or lacks the columns the task needs."""


class DegeneratePlane(BasinError):
    """The directions spanning a plane are (nearly) linearly dependent."""
