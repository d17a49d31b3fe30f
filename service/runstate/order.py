"""The order a run's points are queued in (coarse → fine): a leaf the run kind and the
queueing share (``service.jobs.run`` and ``service.runstate.create`` both use it)."""

from __future__ import annotations

from basin import grid, refine
from basin.spec import RunSpec


def point_order(spec: RunSpec) -> list[int]:
    """Flat indices coarse → fine (:func:`basin.grid.order_1d` / :func:`order_2d`); for an
    adaptive run, its coarse grid only (the first wave; the next ones are queued by the
    worker that finishes each wave, :func:`service.runstate.drain.finish_run`)."""
    if spec.refine is not None:
        return refine.first_wave(spec.shape, spec.refine.levels, spec.refine_required)
    if spec.is_1d:
        return grid.order_1d(spec.shape[0])
    nx, ny = spec.shape
    return grid.order_2d(nx, ny)


__all__ = ["point_order"]
