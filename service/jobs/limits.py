"""One set of job limits for every kind of job (runs, fits, the kinds added later).

The server's caps (``BASIN_MAX_*``), the store's quota and the time limit of a job held by
one worker, read once from the settings (:meth:`JobLimits.from_settings`). The kernel
applies them when a job is created (:func:`service.jobs.create_job` calls the kind's
``check``), before anything is queued; a kind reuses :func:`over_run_limits` for every run
it will queue, so no job queues a run the API would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from basin.paths import path_class
from basin.spec import SCOPE_PRESETS, RunSpec


@dataclass(frozen=True)
class JobLimits:
    """This server's caps on one job (``BASIN_MAX_*`` settings)."""

    points: int = 10_000
    resolution: int = 201
    examples: int = 10_000
    length: int = 2048
    batch_size: int = 512
    checkpoints: int = 100
    scope_length: int = 500
    generated_tokens: int = 200_000
    #: Characters of a job's name (shown on every page, kept in the indexes): ``BASIN_MAX_NAME_LENGTH``.
    name_length: int = 200
    #: Training steps of one job that trains (a fit): ``BASIN_MAX_TRAIN_STEPS``.
    train_steps: int = 100_000
    #: Members of one tune family (the product of its axes): ``BASIN_MAX_TUNE_MEMBERS``.
    tune_members: int = 64
    #: Wall-clock seconds a job held by one worker (a fit) may run: ``BASIN_JOB_TIME_LIMIT_S``
    #: (0 = none). Runs are bounded per point instead (``BASIN_POINT_TIME_LIMIT_S``).
    time_limit_s: float = 6 * 3600.0
    #: The store's quota (``BASIN_MAX_STORE_BYTES``; None = none): a job that writes
    #: checkpoints is refused when they would not fit.
    store_bytes: int | None = None

    @classmethod
    def from_settings(cls, settings: Any) -> JobLimits:
        return cls(
            points=settings.max_points,
            resolution=settings.max_resolution,
            examples=settings.max_examples,
            length=settings.max_length,
            batch_size=settings.max_batch_size,
            checkpoints=settings.max_checkpoints,
            scope_length=settings.max_scope_length,
            generated_tokens=settings.max_generated_tokens,
            name_length=getattr(settings, "max_name_length", cls.name_length),
            train_steps=getattr(settings, "max_train_steps", cls.train_steps),
            tune_members=getattr(settings, "max_tune_members", cls.tune_members),
            time_limit_s=getattr(settings, "job_time_limit_s", cls.time_limit_s),
            store_bytes=getattr(settings, "max_store_bytes", None),
        )


class Caps:
    """Collects one line per cap exceeded: the value, the limit and the setting that raises it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def cap(self, what: str, value: int | float, limit: int | float, setting: str) -> None:
        if value > limit:
            self.lines.append(f"{what} {value} is over this server's limit of {limit} ({setting})")


def over_data_limits(
    caps: Caps, limits: JobLimits, *, examples: int, length: int, batch_size: int, prefix: str = ""
) -> None:
    """The caps every job that reads a dataset through a model shares."""
    caps.cap(f"{prefix}max_examples:", examples, limits.examples, "BASIN_MAX_EXAMPLES")
    caps.cap(f"{prefix}max_length:", length, limits.length, "BASIN_MAX_LENGTH")
    caps.cap(f"{prefix}batch_size:", batch_size, limits.batch_size, "BASIN_MAX_BATCH_SIZE")


def scope_over_limit(scope: str, limits: JobLimits) -> str | None:
    """Why a scope regex is too long for this server (``None`` when it is a preset or fits)."""
    if scope in SCOPE_PRESETS or len(scope) <= limits.scope_length:
        return None
    return (
        f"scope: the regex is {len(scope)} characters long, over this server's limit of "
        f"{limits.scope_length} (BASIN_MAX_SCOPE_LENGTH)"
    )


def over_run_limits(spec: RunSpec, limits: JobLimits) -> list[str]:
    """One line per cap the run ``spec`` exceeds (the scope's length apart: :func:`scope_over_limit`)."""
    caps = Caps()
    caps.cap("points:", spec.planned_points, limits.points, "BASIN_MAX_POINTS")
    if not spec.is_1d:
        for axis, n in zip("xy", spec.shape, strict=False):
            caps.cap(f"path.resolution ({axis}):", n, limits.resolution, "BASIN_MAX_RESOLUTION")
    roles = path_class(spec.path.type).roles_in(spec.path)
    named = sum(1 if isinstance(v, str) else len(v) for v in roles.values())
    caps.cap("checkpoints on the path:", named, limits.checkpoints, "BASIN_MAX_CHECKPOINTS")
    over_data_limits(
        caps, limits, examples=spec.max_examples, length=spec.max_length, batch_size=spec.batch_size
    )
    # a run's name is shown on every page and kept in the runs index, rewritten on each save
    n = len(spec.name or "")
    if n > limits.name_length:
        caps.lines.append(f"name: {n} characters is over this server's limit of {limits.name_length} "
                          "(BASIN_MAX_NAME_LENGTH)")
    return caps.lines


__all__ = ["Caps", "JobLimits", "over_data_limits", "over_run_limits", "scope_over_limit"]
