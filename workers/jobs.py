"""The worker's side of the job kernel: run one job of a worker-held kind to its end.

:func:`run_job` is the body of every worker-held kind's Celery task (the fit's
``basin.fit``, and :data:`service.tasks.JOB_TASK` for the kinds added later): it announces
the job on the worker's heartbeat (first: the reaper must see it is being worked on),
starts it (``queued`` → ``running``; a cancelled or already-taken job is skipped, so a
redelivered task is harmless), calls the kind's ``executor`` with the job's
:class:`service.jobs.JobState`, and ends the job ``failed`` with the message of any error
the executor raises (a :class:`basin.errors.BasinError` as it is, anything else with its
type). The executor ends the job itself otherwise (``done``, ``cancelled``, or ``failed``
past its time limit).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Any, cast

from basin.status import FAILED
from service.jobs import WorkerJobKind, builtin_kinds, get_kind

logger = logging.getLogger(__name__)


def executor_of(kind: WorkerJobKind) -> Callable[[str, Any, Any], dict]:
    """The kind's ``executor`` (``"module:function"``), imported."""
    module, _, name = kind.executor.partition(":")
    return cast("Callable[[str, Any, Any], dict]", getattr(importlib.import_module(module), name))


def run_job(kind_name: str, job_id: str, state: Any) -> dict:
    """Run job ``job_id`` of kind ``kind_name`` to its end; safe to deliver twice."""
    from basin.errors import BasinError

    builtin_kinds()
    kind = get_kind(kind_name)
    if not isinstance(kind, WorkerJobKind):
        raise TypeError(f"job kind {kind_name!r} is not run by one worker")
    r = state.client
    if r.hget(kind.hash_key(job_id), "spec") is None:
        return {kind.name: job_id, "skipped": "gone"}
    js = kind.state(r, job_id)
    hb = getattr(state, "heartbeat", None)
    if hb is not None:
        hb.holding(kind.name, job_id)
    try:
        started = js.start(state.name)
        if started != "ok":  # cancelled while queued, or another delivery took it
            return {kind.name: job_id, "skipped": started}
        try:
            return executor_of(kind)(job_id, js, state)
        except BasinError as e:
            js.end(FAILED, str(e))
            return {kind.name: job_id, "error": str(e)}
        except Exception as e:  # a bug or a broken file: say so on the job rather than hang it
            logger.exception("%s %s failed", kind.name, job_id)
            js.end(FAILED, f"{type(e).__name__}: {e}")
            return {kind.name: job_id, "error": str(e)}
    finally:
        if hb is not None:
            hb.holding(None)


__all__ = ["executor_of", "run_job"]
