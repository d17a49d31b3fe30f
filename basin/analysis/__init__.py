"""Analyses over a run's points and checkpoints: barriers, distances, surface extremes.

Projection onto planes (PCA of a trajectory via its Gram matrix, least squares onto
a plane through three) lives with the path that uses it, :mod:`basin.paths.trajectory`.
Importing this package does not import torch (the figures use the barrier).
"""

from __future__ import annotations

from basin.analysis.barrier import (
    barrier,
    barrier_label,
    barrier_text,
    barriers,
    chord_barrier,
    is_no_barrier,
    is_partial,
)
from basin.analysis.distances import distances
from basin.analysis.surface import extremes

__all__ = ["barrier", "barrier_label", "barrier_text", "barriers", "is_no_barrier", "chord_barrier", "distances", "extremes", "is_partial"]
