"""The job kernel (:mod:`service.jobs.kernel`) and its built-in kinds: ``run``
(:mod:`service.jobs.run`) and ``fit`` (:mod:`service.jobs.fit`). One set of job limits for
every kind: :mod:`service.jobs.limits`. Importing this package registers the built-in kinds.
"""

from __future__ import annotations

from service.jobs.kernel import (
    KINDS,
    JobConflict,
    JobKind,
    JobNotFound,
    JobState,
    ReapContext,
    ReapReport,
    WorkerJobKind,
    beat_job,
    cancel_job,
    create_job,
    get_kind,
    job_hash,
    kinds,
    list_jobs,
    register,
    unregister,
)
from service.jobs.limits import JobLimits

__all__ = [
    "KINDS",
    "JobConflict",
    "JobKind",
    "JobLimits",
    "JobNotFound",
    "JobState",
    "ReapContext",
    "ReapReport",
    "WorkerJobKind",
    "beat_job",
    "builtin_kinds",
    "cancel_job",
    "create_job",
    "get_kind",
    "job_hash",
    "kinds",
    "list_jobs",
    "register",
    "unregister",
]


def builtin_kinds() -> list[JobKind]:
    """Register (by importing) and return the built-in kinds: run, fit, study."""
    from service.jobs.fit import FIT
    from service.jobs.run import RUN
    from service.jobs.study import STUDY

    return [RUN, FIT, STUDY]
