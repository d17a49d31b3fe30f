"""The job kernel (:mod:`service.jobs.kernel`) and its built-in kinds: ``run``
(:mod:`service.jobs.run`), ``fit`` (:mod:`service.jobs.fit`) and ``subspace``
(:mod:`service.jobs.subspace`). One set of job limits for
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
    """Register (by importing) and return the built-in kinds."""
    from service.jobs.fit import FIT
    from service.jobs.hub import HUB
    from service.jobs.run import RUN
    from service.jobs.study import STUDY
    from service.jobs.subspace import SUBSPACE
    from service.jobs.tune import TUNE

    return [RUN, FIT, HUB, SUBSPACE, TUNE, STUDY]
