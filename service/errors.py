"""The service's exceptions, in one leaf module (it imports only :mod:`basin.errors`).

The store, the run bookkeeping, uploads and the workers' fetch raise these; the API maps
them to HTTP answers in one table (:data:`backend.app.api.errors.STATUS`), looked up along
each exception's MRO: a :class:`CheckpointNotFound` is a :class:`NotFound` (404) before
it is a :class:`~basin.errors.CheckpointError` (422). The core's own exceptions live in
:mod:`basin.errors`; anything else that is a :class:`~basin.errors.BasinError` is invalid
input (422).
"""

from __future__ import annotations

from basin.errors import BasinError, CheckpointError, DatasetError

# ---- the two families the API maps besides "invalid input" ---------------------------------


class NotFound(BasinError):
    """Mixin for "no such item" errors, so services can answer 404 instead of 422."""


class Conflict(BasinError):
    """The item exists, but its state refuses the request (a taken name, an ended run): 409."""


class PayloadTooLarge(BasinError):
    """A request body (or one form field) over the server's cap (``BASIN_MAX_UPLOAD_BYTES``): 413."""


# ---- the store ------------------------------------------------------------------------------


class CheckpointNotFound(NotFound, CheckpointError):
    """No checkpoint matches the reference (also a :class:`CheckpointError`)."""


class DatasetNotFound(NotFound, DatasetError):
    """No dataset matches the reference (also a :class:`DatasetError`)."""


class NameTaken(Conflict):
    """Another checkpoint (or dataset) already has this name; names are unique."""


class QuotaExceeded(BasinError):
    """Adding this would take the store over its total quota (``BASIN_MAX_STORE_BYTES``)."""


class UnsafeSource(CheckpointError):
    """A folder on the server's disk holds something the store will not read: a symbolic
    link, a device, a FIFO, a socket or another special file."""


class ContentMismatch(BasinError):
    """Content hashes to another id than the one requested (a corrupted or altered download)."""


class CheckpointMismatch(ContentMismatch, CheckpointError):
    """A checkpoint's files hash to another id than the requested one."""


class DatasetMismatch(ContentMismatch, DatasetError):
    """A dataset file hashes to another id than the requested one."""


class FilesUnavailable(Conflict):
    """A stored item's files are gone or unreadable on the server (e.g. a registered
    directory was removed): the item exists but cannot be served."""


# ---- runs -----------------------------------------------------------------------------------


class RunNotFound(NotFound):
    """No run with this id in Redis or in the store (the API answers 404)."""

    def __init__(self, run_id: str):
        super().__init__(f"no run with id {run_id!r}")
        self.run_id = run_id


class RunConflict(Conflict):
    """The run's state refuses the request, e.g. cancelling a finished run (the API answers 409)."""


class InvalidCursor(BasinError):
    """A ``?after=`` / ``Last-Event-ID`` that no answer of this API gave (the API answers 422)."""


# ---- requests and uploads -------------------------------------------------------------------


class InvalidUpload(BasinError):
    """The request is not a usable upload: empty, no ``file`` field, no such directory."""


class UnknownReference(BasinError):
    """A reference the request carries (a spec's checkpoint or dataset, an upload's
    ``config=``) names nothing in the store: the input is invalid, no URL is missing."""


class ArchiveError(CheckpointError):
    """An archive (an upload, or a download a remote worker fetches) is refused: a member
    outside the folder, a link or device, too many members or bytes, a corrupt stream."""


__all__ = [
    "ArchiveError",
    "CheckpointMismatch",
    "CheckpointNotFound",
    "Conflict",
    "ContentMismatch",
    "DatasetMismatch",
    "DatasetNotFound",
    "FilesUnavailable",
    "InvalidCursor",
    "InvalidUpload",
    "NameTaken",
    "NotFound",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RunConflict",
    "RunNotFound",
    "UnknownReference",
    "UnsafeSource",
]


class ServerBusy(BasinError):
    """A resource this server shares among clients is all taken (e.g. the event-stream slots,
    ``BASIN_MAX_STREAMS``): 503 with ``Retry-After: <retry_after>``."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = int(retry_after)
